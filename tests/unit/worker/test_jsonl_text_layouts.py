"""JSON Lines quotes text whatever its Arrow layout: a processor's pandas `string[pyarrow]`
column arrives as `large_string` and a categorical as a dictionary; both were written
unquoted (invalid JSON) before."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from collectjob_worker.formats import JsonlPart


def test_large_string_and_dictionary_columns_are_quoted_and_escaped() -> None:
    frame = pd.DataFrame(
        {
            "country": pd.Series(["DE", 'say "hi"\n', None], dtype="string[pyarrow]"),
            "band": pd.Series(["detractor", "promoter", "detractor"]).astype("category"),
            "score": [0, 10, 3],
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert pa.types.is_large_string(table.schema.field("country").type)
    assert pa.types.is_dictionary(table.schema.field("band").type)
    part = JsonlPart(table.schema)
    part.write(table)
    lines = b"".join(part.finish()).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"country": "DE", "band": "detractor", "score": 0},
        {"country": 'say "hi"\n', "band": "promoter", "score": 10},
        {"country": None, "band": "detractor", "score": 3},
    ]
