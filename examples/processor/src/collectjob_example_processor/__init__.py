"""`enrich-responses`: an example processor for survey responses.

It adds `score_band` (NPS: detractor 0-6, passive 7-8, promoter 9-10), upper-cases the
country code, and rejects rows whose score is not a whole number from 0 to 10, so a bad row
lands in `rejects/` with its line number instead of in the output.

Options (all optional): `{"scoreColumn": "score", "countryColumn": "country"}`.
It is deterministic and has no side effects, so a redone chunk gives the same part.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

BANDS = ((0, 6, "detractor"), (7, 8, "passive"), (9, 10, "promoter"))


def enrich_responses(frame: pd.DataFrame, context: Any) -> pd.DataFrame:
    score_column = context.options.get("scoreColumn", "score")
    country_column = context.options.get("countryColumn", "country")
    for column in (score_column, country_column):
        if column not in frame.columns:
            raise KeyError(f"enrich-responses needs a column {column!r}; got {list(frame.columns)}")
    scores = pd.to_numeric(frame[score_column].astype("string"), errors="coerce")
    valid = scores.notna() & (scores % 1 == 0) & scores.between(0, 10)
    bad = frame.index[~valid.to_numpy(dtype=bool, na_value=False)]
    if len(bad):
        context.reject(frame.loc[bad], f"{score_column} is not a whole number from 0 to 10")
    kept = frame.drop(index=bad)
    kept_scores = scores.drop(index=bad)
    band = pd.Series("", index=kept.index, dtype="string[pyarrow]")
    for low, high, name in BANDS:
        band[kept_scores.between(low, high)] = name
    kept[country_column] = kept[country_column].astype("string[pyarrow]").str.upper()
    kept["score_band"] = band
    return kept
