"""Fixtures for the static checks of deploy/monitoring: the objects as parsed, promtool, and
the metric names the operator and the worker really export."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from localcluster.monitoring import (
    ALERT_TESTS,
    PROMETHEUS_RULE,
    exposed_names,
    load_dashboard,
    load_yaml,
    write_rules_file,
)
from localcluster.prometheus import INSTALL_SCRIPT


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not installed: run `bash {INSTALL_SCRIPT}` (make test does)")
    return path


@pytest.fixture(scope="session")
def prometheus_rule() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_RULE)


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, beside the promtool unit tests."""
    write_rules_file(tmp_path)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    return tmp_path


def module_families(module: Any) -> list[Any]:
    """The metric families of every metric object a module defines at its top level."""
    return [
        family
        for value in vars(module).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]


@pytest.fixture(scope="session")
def exported_names() -> set[str]:
    """Every sample name the operator's and the worker's /metrics can show."""
    from collectjob_operator import metrics as operator_metrics
    from collectjob_worker import metrics as worker_metrics

    families = [
        *module_families(operator_metrics),
        *operator_metrics.JobsCollector().collect(),
        *worker_metrics.WorkerMetrics("ns", "job").registry.collect(),
    ]
    return exposed_names(families)
