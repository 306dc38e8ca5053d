"""The Grafana dashboard: its variables, the panels issue 5 lists, and queries that honour the
variables."""

from __future__ import annotations

from typing import Any

from localcluster.monitoring import metric_names, panel_queries, panels, variable_queries

REQUIRED_PANELS = {
    "Jobs by phase",
    "Progress per job",
    "Rows/s",
    "Rejected rows/s",
    "ETA",
    "Suspend and resume latency",
    "Worker restarts",
    "Checkpoint age",
}
# Operator-wide series carry no job labels; every other query must filter on both variables.
OPERATOR_WIDE = {
    "collectjob_suspend_latency_seconds_bucket",
    "collectjob_resume_latency_seconds_bucket",
    "collectjob_reconcile_duration_seconds_bucket",
    "collectjob_reconcile_errors_total",
    "collectjob_phase_transitions_total",
}


def test_variables_are_namespace_and_job_chained(dashboard: dict[str, Any]) -> None:
    queries = variable_queries(dashboard)
    assert set(queries) == {"namespace", "job"}
    assert "$namespace" in queries["job"], "the job list must follow the chosen namespace"
    for variable in dashboard["templating"]["list"]:
        if variable["name"] in queries:
            assert variable["multi"] and variable["includeAll"], variable["name"]


def test_the_panels_issue_5_lists_are_there(dashboard: dict[str, Any]) -> None:
    titles = {p["title"] for p in panels(dashboard) if p["type"] != "row"}
    assert titles >= REQUIRED_PANELS, f"missing: {sorted(REQUIRED_PANELS - titles)}"


def test_every_panel_has_a_query_and_uses_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_per_job_queries_filter_on_namespace_and_job(dashboard: dict[str, Any]) -> None:
    unfiltered = [
        f"{q.panel} ({q.ref_id})"
        for q in panel_queries(dashboard)
        if metric_names(q.expr) - OPERATOR_WIDE
        and not ('namespace=~"$namespace"' in q.expr and 'collectjob=~"$job"' in q.expr)
    ]
    assert unfiltered == []


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]
