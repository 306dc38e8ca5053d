"""The plugin's usage errors and exit codes, decided before any API call."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from collectjob_api.client import Job
from collectjob_tools.plugin import EXIT_USAGE, jobs_table, main


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig for an address nothing listens on: usage errors never reach it."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}
                ],
            }
        )
    )
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["suspend"], "give NAMEs, -l SELECTOR or --all"),
        (["stop", "a", "-l", "x=y"], "not several"),
        (["resume", "a", "-A"], "need a namespace"),
    ],
)
def test_selection_errors_exit_2(kubeconfig, capsys, argv, message):
    assert main([*argv, "--kubeconfig", kubeconfig]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_unreachable_api_server_exits_1_naming_the_call(kubeconfig, capsys):
    out = io.StringIO()
    assert main(["get", "orders", "--kubeconfig", kubeconfig, "--request-timeout", "2"], out) == 1
    err = capsys.readouterr().err
    assert "get CollectJob ns/orders" in err  # the context's namespace is the default


def test_wide_table_has_provenance_columns():
    job = Job(name="a", namespace="n", phase="Running", labels={"collect.dev/request": "r-1"})
    header, row = jobs_table([job], wide=True).splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "PROGRESS",
        "ROWS",
        "RATE",
        "ETA",
        "AGE",
        "CLIENT",
        "REQUEST",
        "THROTTLE",
        "MESSAGE",
    ]
    assert "r-1" in row and "Running" in row


def test_connection_flags_go_before_or_after_the_command(kubeconfig, capsys):
    """As with kubectl: `kubectl collectjob -n ns get` and `... get -n ns` are the same."""
    for argv in (
        ["--kubeconfig", kubeconfig, "-n", "other", "get", "x"],
        ["get", "x", "--kubeconfig", kubeconfig, "-n", "other"],
    ):
        assert main([*argv, "--request-timeout", "1"]) == 1
        assert "get CollectJob other/x" in capsys.readouterr().err
