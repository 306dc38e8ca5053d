"""The example processor on its own, as a team would test theirs: plain pandas in, out."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pandas as pd
import pytest
from collectjob_example_processor import enrich_responses


class Context(SimpleNamespace):
    def reject(self, rows, reason):
        self.rejected.update({label: reason for label in rows.index})
        return rows.index


def context(**options):
    return Context(options=options, rejected={}, log=logging.getLogger("test"))


def frame(**columns):
    return pd.DataFrame({k: pd.array(v, dtype="string[pyarrow]") for k, v in columns.items()})


def test_bands_scores_and_upper_cases_countries():
    ctx = context()
    out = enrich_responses(frame(score=["0", "7", "10"], country=["de", "Fr", "US"]), ctx)
    assert out["score_band"].tolist() == ["detractor", "passive", "promoter"]
    assert out["country"].tolist() == ["DE", "FR", "US"]
    assert ctx.rejected == {}


@pytest.mark.parametrize("score", ["11", "-1", "7.5", "seven", ""])
def test_rejects_scores_outside_0_to_10(score):
    ctx = context()
    out = enrich_responses(frame(score=["5", score], country=["de", "de"]), ctx)
    assert out.index.tolist() == [0]
    assert ctx.rejected == {1: "score is not a whole number from 0 to 10"}


def test_a_missing_column_is_a_clear_error():
    with pytest.raises(KeyError, match="needs a column 'rating'"):
        enrich_responses(frame(score=["1"], country=["de"]), context(scoreColumn="rating"))
