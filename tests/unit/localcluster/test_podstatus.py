"""Pod status follows a kubelet's rules: phase, conditions, container states, restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from localcluster.podstatus import (
    LOST_EXIT_CODE,
    ContainerStatus,
    PodReport,
    Running,
    Terminated,
    Waiting,
    exited,
    pod_conditions,
    pod_phase,
    resumed,
    should_restart,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(seconds=7)


def running(name: str = "main") -> ContainerStatus:
    return ContainerStatus(name, "img", Running(T0))


def ended(code: int, name: str = "main") -> ContainerStatus:
    return ContainerStatus(name, "img", exited(code, T0, T1))


def waiting(name: str = "main", after: int | None = None) -> ContainerStatus:
    last = exited(after, T0, T1) if after is not None else None
    reason = "CrashLoopBackOff" if last else "ContainerCreating"
    return ContainerStatus(name, "img", Waiting(reason), last_terminated=last)


@pytest.mark.parametrize(
    ("policy", "code", "init", "expected"),
    [
        ("Always", 0, False, True),
        ("Always", 1, False, True),
        ("OnFailure", 0, False, False),
        ("OnFailure", 2, False, True),
        ("Never", 2, False, False),
        ("Always", 0, True, False),
        ("Always", 1, True, True),
        ("Never", 1, True, False),
    ],
)
def test_restart_policy(policy: str, code: int, init: bool, expected: bool) -> None:
    assert should_restart(policy, code, init) is expected


@pytest.mark.parametrize(
    ("policy", "app", "expected"),
    [
        ("Always", [waiting()], "Pending"),
        ("Always", [running(), waiting("b")], "Pending"),
        ("Always", [running(), running("b")], "Running"),
        ("Never", [running(), ended(1, "b")], "Running"),
        ("Always", [waiting(after=1)], "Running"),
        ("Always", [ended(0)], "Running"),
        ("OnFailure", [waiting(after=3)], "Running"),
        ("OnFailure", [ended(0), ended(0, "b")], "Succeeded"),
        ("Never", [ended(0), ended(0, "b")], "Succeeded"),
        ("Never", [ended(0), ended(4, "b")], "Failed"),
    ],
)
def test_phase_of_app_containers(policy: str, app: list[ContainerStatus], expected: str) -> None:
    assert pod_phase(policy, [], app) == expected


def test_init_containers_hold_the_pod_pending_until_they_succeed() -> None:
    assert pod_phase("Always", [running("init")], [waiting()]) == "Pending"
    assert pod_phase("OnFailure", [waiting("init", after=1)], [waiting()]) == "Pending"
    assert pod_phase("Always", [ended(0, "init")], [running()]) == "Running"


def test_a_failed_init_container_fails_a_pod_that_never_restarts() -> None:
    assert pod_phase("Never", [ended(1, "init")], [waiting()]) == "Failed"


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ([ended(0), ended(0, "b")], "Succeeded"),
        ([ended(143), ended(0, "b")], "Failed"),
        ([waiting(after=0)], "Succeeded"),
        ([waiting()], "Failed"),
    ],
)
def test_a_stopping_pod_is_terminal(app: list[ContainerStatus], expected: str) -> None:
    assert pod_phase("Always", [], app, stopping=True) == expected


def test_exit_reasons_are_completed_or_error() -> None:
    assert exited(0, T0, T1).reason == "Completed"
    assert exited(137, T0, T1).reason == "Error"


def test_a_container_state_names_all_three_kinds_for_a_merge_patch() -> None:
    status = ContainerStatus(
        "main",
        "img",
        Running(T1),
        last_terminated=exited(3, T0, T1),
        restart_count=2,
        container_id="local://42",
        image_id="local:///venv/bin/python",
    )
    body = status.to_json()
    assert body["state"] == {
        "waiting": None,
        "running": {"startedAt": "2026-01-02T03:04:12Z"},
        "terminated": None,
    }
    assert body["lastState"]["terminated"]["exitCode"] == 3
    assert body["lastState"]["terminated"]["reason"] == "Error"
    assert (body["ready"], body["started"], body["restartCount"]) == (True, True, 2)
    assert body["containerID"] == "local://42"


def test_container_status_parses_back_what_it_reports() -> None:
    for status in (
        ContainerStatus("a", "img", Running(T0), exited(1, T0, T1), 3, "local://1", "x"),
        ContainerStatus("b", "img", Waiting("CrashLoopBackOff", "back-off"), exited(2, T0, T1)),
        ContainerStatus("c", "img", Terminated(0, "Completed", T1, T0)),
    ):
        assert ContainerStatus.parse(status.to_json()) == status


def test_a_container_left_running_by_a_previous_agent_is_lost_and_restarted() -> None:
    after = resumed(running(), "Always", False, T1)
    assert after.state == Waiting(
        "CrashLoopBackOff", "restarting after the local node agent restarted"
    )
    assert after.last_terminated is not None
    assert after.last_terminated.exit_code == LOST_EXIT_CODE
    assert after.last_terminated.reason == "ContainerStatusUnknown"


def test_a_lost_container_that_must_not_restart_stays_terminated() -> None:
    after = resumed(running(), "Never", False, T1)
    assert isinstance(after.state, Terminated)
    assert after.state.exit_code == LOST_EXIT_CODE


def test_finished_containers_stay_finished_when_resumed() -> None:
    assert resumed(ended(0), "OnFailure", False, T1) == ended(0)
    assert resumed(waiting(), "Always", False, T1) == waiting()


def test_conditions_when_every_container_runs() -> None:
    conditions = {c.type: c for c in pod_conditions([], [running()], "Running", True, {}, T1)}
    assert {k: c.status for k, c in conditions.items()} == {
        "PodReadyToStartContainers": True,
        "Initialized": True,
        "ContainersReady": True,
        "Ready": True,
    }
    assert all(c.since == T1 for c in conditions.values())


def test_conditions_name_unready_and_uninitialized_containers() -> None:
    conditions = {
        c.type: c
        for c in pod_conditions(
            [waiting("setup")], [waiting("a"), waiting("b")], "Pending", False, {}, T1
        )
    }
    assert conditions["Initialized"].message == "containers with incomplete status: [setup]"
    assert conditions["Ready"].reason == "ContainersNotReady"
    assert conditions["Ready"].message == "containers with unready status: [a b]"


def test_a_finished_pod_is_not_ready_because_it_completed() -> None:
    ready = pod_conditions([], [ended(0)], "Succeeded", True, {}, T1)[-1]
    assert (ready.type, ready.status, ready.reason) == ("Ready", False, "PodCompleted")


def test_transition_times_change_only_when_the_status_does() -> None:
    previous = {"Ready": ("True", T0), "Initialized": ("True", T0)}
    conditions = {
        c.type: c for c in pod_conditions([], [waiting(after=1)], "Running", True, previous, T1)
    }
    assert conditions["Initialized"].since == T0
    assert conditions["Ready"].since == T1


def test_the_status_patch_reports_addresses_and_both_container_lists() -> None:
    report = PodReport(
        phase="Running",
        host_ip="127.0.0.1",
        pod_ip="127.1.0.9",
        start_time=T0,
        conditions=(),
        init=(ended(0, "setup"),),
        app=(running(),),
    )
    status = report.status_patch()["status"]
    assert status["podIPs"] == [{"ip": "127.1.0.9"}]
    assert status["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert status["startTime"] == "2026-01-02T03:04:05Z"
    assert [s["name"] for s in status["initContainerStatuses"]] == ["setup"]
    assert [s["name"] for s in status["containerStatuses"]] == ["main"]


def test_no_pod_ip_is_reported_before_one_is_assigned() -> None:
    report = PodReport("Pending", "127.0.0.1", None, T0, (), (), (waiting(),))
    status = report.status_patch()["status"]
    assert "podIP" not in status
    assert "initContainerStatuses" not in status
