"""The typed job view and the formatting the plugin and the console share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collectjob_api.client import Action, Job
from collectjob_tools import render

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def job(**status) -> Job:
    obj = {
        "metadata": {
            "name": "orders",
            "namespace": "team-a",
            "creationTimestamp": "2026-11-30T11:00:00Z",
            "labels": {"collect.dev/client": "shop", "collect.dev/request": "r-7"},
        },
        "spec": {"suspend": False},
        "status": status,
    }
    return Job.from_object(obj, NOW)


def test_rate_counts_active_time_only():
    # 600 s since the start, 300 of them suspended earlier, 100 s suspended right now.
    view = job(
        phase="Suspended",
        startTime="2026-11-30T11:50:00Z",
        suspendedSeconds=300,
        suspendedSince="2026-11-30T11:58:20Z",
        rowsProcessed=20_000,
    )
    assert view.rows_per_second == 20_000 / 200
    assert render.rate(view) == "100 rows/s"


def test_percent_from_bytes_and_provenance_from_labels():
    view = job(phase="Running", bytesProcessed=250, bytesTotal=1000)
    assert view.percent == 25.0 and view.client == "shop" and view.request == "r-7"
    assert render.bar(view.percent, width=4) == "█░░░  25.0%"
    assert job(phase="Succeeded", bytesProcessed=0, bytesTotal=0).percent == 100.0
    assert job().rows_per_second is None and render.rate(job()) == "-"


def test_eta_only_while_running():
    eta = (NOW + timedelta(seconds=185)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert render.eta(job(phase="Running", estimatedCompletionTime=eta), NOW) == "3m05s"
    assert render.eta(job(phase="Suspended", estimatedCompletionTime=eta), NOW) == "-"


def test_durations_and_throttle_read_like_kubectl():
    assert [render.duration(s) for s in (5, 65, 7300, 90000)] == ["5s", "1m05s", "2h01m", "1d1h"]
    assert render.throttle(job(throttleBytesPerSecond=1048576)) == "1MiB/s"
    assert render.throttle(job(throttleBytesPerSecond=1536)) == "1.5KiB/s"
    assert render.throttle(job()) == "-"


def test_each_action_is_one_merge_patch_with_its_target_phase():
    assert Action.SUSPEND.patch == {"spec": {"suspend": True}}
    assert Action.TERMINATE.patch == {"spec": {"shutdown": "Terminate"}}
    assert Action.STOP.target == frozenset({"Stopped"})
    assert "Succeeded" in Action.RESUME.target


def test_table_aligns_columns():
    assert render.table([["NAME", "PHASE"], ["a-long-name", "Running"]]).splitlines() == [
        "NAME          PHASE",
        "a-long-name   Running",
    ]
