"""The little PromQL reading the monitoring checks rely on."""

from __future__ import annotations

import pytest

from localcluster.monitoring import as_bool, fill_variables, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (phase) (collectjob_jobs{phase="Running"})', {"collectjob_jobs"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket[5m])))",
            {"a_seconds_bucket"},
        ),
        ("time() - max by (namespace, collectjob) (x_timestamp_seconds)", {"x_timestamp_seconds"}),
        (
            'a{namespace=~"$namespace"} == 1 and on (namespace, collectjob) changes(b[2m]) == 0',
            {"a", "b"},
        ),
        ("rate(c_total[$__rate_interval]) or vector(0)", {"c_total"}),
        ("d offset 10m > bool 5e3", {"d"}),
        ('count(e{label="sum by (x) not_a_metric"})', {"e"}),
        ("recorded:rule:ratio / ignoring(le) f", {"recorded:rule:ratio", "f"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_as_bool_keeps_series_that_do_not_pass_the_threshold() -> None:
    assert as_bool("time() - x > 600") == "time() - x > bool 600"
    assert as_bool("a == 1 and on (n) b + c == 0") == "a == bool 1 and on (n) b + c == bool 0"
    assert as_bool("a >= bool 1") == "a >= bool 1"
    assert as_bool("a > b") == "a > b"


def test_fill_variables_all_spellings() -> None:
    values = {"namespace": "team-a", "__rate_interval": "1m"}
    expr = 'rate(x{namespace=~"$namespace", n="${namespace}", m="[[namespace]]"}[$__rate_interval])'
    assert fill_variables(expr, values) == (
        'rate(x{namespace=~"team-a", n="team-a", m="team-a"}[1m])'
    )
    with pytest.raises(KeyError, match=r"\$job"):
        fill_variables('x{collectjob=~"$job"}', values)
