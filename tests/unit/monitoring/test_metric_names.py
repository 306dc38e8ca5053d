"""No dead panels or alerts: every metric name the dashboard and the rules select is one the
operator or the worker exports."""

from __future__ import annotations

from typing import Any

from localcluster.monitoring import (
    alert_rules,
    metric_names,
    panel_queries,
    recorded_names,
    variable_queries,
)


def used_names(dashboard: dict[str, Any], prometheus_rule: dict[str, Any]) -> dict[str, str]:
    """Each metric name used, with one place that uses it."""
    uses = [(f"panel {q.panel!r}", q.expr) for q in panel_queries(dashboard)]
    uses += [(f"variable ${n}", e) for n, e in variable_queries(dashboard).items()]
    uses += [(f"alert {r.name}", r.expr) for r in alert_rules(prometheus_rule)]
    return {name: where for where, expr in uses for name in metric_names(expr)}


def test_every_metric_used_is_exported_by_the_code(
    dashboard: dict[str, Any], prometheus_rule: dict[str, Any], exported_names: set[str]
) -> None:
    known = exported_names | recorded_names(prometheus_rule)
    missing = {
        name: where
        for name, where in used_names(dashboard, prometheus_rule).items()
        if name not in known
    }
    assert missing == {}, f"used but exported by neither metrics module: {missing}"
