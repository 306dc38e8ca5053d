"""The PrometheusRule: valid for promtool, alert logic unit-tested, and every alert tells the
reader what to do."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from localcluster.monitoring import RULES_FILE_NAME, alert_rules

REQUIRED_ALERTS = {
    "CollectJobStalled",
    "CollectJobFailed",
    "CollectJobSuspendedTooLong",
    "CollectJobCheckpointStale",
}


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_check_rules_accepts_the_prometheus_rule(promtool: str, rules_dir: Path) -> None:
    result = run(promtool, "check", "rules", RULES_FILE_NAME, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alert_logic_pass(promtool: str, rules_dir: Path) -> None:
    result = run(promtool, "test", "rules", "alerts.test.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_issue_5_asks_for_exist(prometheus_rule: dict[str, Any]) -> None:
    assert {rule.name for rule in alert_rules(prometheus_rule)} == REQUIRED_ALERTS


def test_every_alert_has_a_severity_and_a_summary_that_says_what_to_do(
    prometheus_rule: dict[str, Any],
) -> None:
    for rule in alert_rules(prometheus_rule):
        assert rule.labels.get("severity") in {"critical", "warning", "info"}, rule.name
        summary = rule.annotations.get("summary", "")
        assert "{{ $labels.namespace }}/{{ $labels.collectjob }}" in summary, rule.name
        assert "kubectl" in summary, f"{rule.name}: the summary names no command to run"
        assert rule.annotations.get("description"), rule.name


def test_the_suspension_alert_names_its_threshold(prometheus_rule: dict[str, Any]) -> None:
    (rule,) = [r for r in alert_rules(prometheus_rule) if r.name == "CollectJobSuspendedTooLong"]
    threshold = rule.labels["threshold"]
    assert rule.for_ == threshold
    assert "24 hours" in rule.annotations["summary"] and threshold == "24h"
