"""Phase decisions: what replicas, status and events follow from spec and observed world."""

from __future__ import annotations

from datetime import timedelta

from collectjob_api.checkpoint import Checkpoint
from collectjob_operator.decisions import Decision, EventType, decide
from collectjob_operator.job import CollectJob
from collectjob_operator.status import ConditionType, JobStatus, Phase
from unit.operator.conftest import NOW

RUNNING_POD = (("orders-worker-abc", True, False, 0),)
GONE_POD = (("orders-worker-abc", True, True, 0),)


def run(job: CollectJob, world) -> Decision:
    return decide(job.spec, job.generation, job.status, world)


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def condition(decision: Decision, kind: ConditionType):
    found = decision.status.condition(kind)
    assert found is not None, f"condition {kind} missing"
    return found


def test_new_job_scales_worker_up_and_is_pending_until_a_pod_runs(make_job, world):
    d = run(make_job(), world())
    assert d.replicas == 1
    assert d.status.phase is Phase.PENDING
    assert d.status.start_time == NOW
    assert d.status.progress == "0.0%"
    assert d.status.checkpoint_configmap == "orders-checkpoint"
    assert condition(d, ConditionType.PROGRESSING).status is True
    assert [c.type for c in d.status.conditions] == list(ConditionType)


def test_running_pod_makes_the_job_running_with_a_started_event(make_job, world):
    d = run(make_job(status={"phase": "Pending"}), world(pods=RUNNING_POD))
    assert d.status.phase is Phase.RUNNING
    assert reasons(d) == ["Started"]


def test_suspend_scales_to_zero_but_reports_suspending_while_a_pod_exists(make_job, world):
    start = (NOW - timedelta(seconds=60)).isoformat()
    job = make_job(spec={"suspend": True}, status={"phase": "Running", "startTime": start})
    d = run(job, world(pods=GONE_POD))
    assert d.replicas == 0
    assert d.status.phase is Phase.SUSPENDING
    assert condition(d, ConditionType.SUSPENDED).status is False
    assert condition(d, ConditionType.SUSPENDED).reason == "Suspending"
    assert d.status.suspended_since == NOW
    assert reasons(d) == ["Suspending"]


def test_suspended_is_reported_only_once_the_pod_is_gone(make_job, world):
    since = (NOW - timedelta(seconds=3)).isoformat()
    job = make_job(spec={"suspend": True}, status={"phase": "Suspending", "suspendedSince": since})
    d = run(job, world(deployment_scaled_down=True))
    assert d.replicas == 0
    assert d.status.phase is Phase.SUSPENDED
    suspended = condition(d, ConditionType.SUSPENDED)
    assert suspended.status is True and suspended.last_transition_time == NOW
    assert condition(d, ConditionType.PROGRESSING).status is False
    assert d.status.estimated_completion_time is None
    assert reasons(d) == ["Suspended"]


def test_resume_scales_up_runs_and_counts_the_suspended_time(make_job, world):
    start = (NOW - timedelta(seconds=60)).isoformat()
    since = (NOW - timedelta(seconds=40)).isoformat()
    job = make_job(
        status={
            "phase": "Suspended",
            "startTime": start,
            "suspendedSince": since,
            "suspendedSeconds": 5,
        }
    )
    d = run(job, world())
    assert d.replicas == 1
    assert d.status.phase is Phase.RUNNING
    assert d.status.suspended_since is None
    assert d.status.suspended_seconds == 45
    assert reasons(d) == ["Resumed"]
    assert condition(d, ConditionType.SUSPENDED).status is False


def test_stop_is_graceful_then_final(make_job, world):
    job = make_job(spec={"shutdown": "Stop"}, status={"phase": "Running"})
    stopping = run(job, world(pods=RUNNING_POD))
    assert (stopping.replicas, stopping.kill_pods) == (0, False)
    assert stopping.status.phase is Phase.STOPPING
    stopped = run(
        make_job(spec={"shutdown": "Stop"}, status={"phase": "Stopping"}),
        world(deployment_scaled_down=True),
    )
    assert stopped.status.phase is Phase.STOPPED
    assert condition(stopped, ConditionType.COMPLETE).status is False
    assert reasons(stopped) == ["Stopped"]


def test_final_phase_ignores_suspend_and_later_checkpoints(make_job, world):
    job = make_job(spec={"shutdown": "Stop", "suspend": False}, status={"phase": "Stopped"})
    d = run(job, world(checkpoint=Checkpoint(done=True, rows_processed=9)))
    assert d.status.phase is Phase.STOPPED
    assert d.replicas == 0
    assert d.events == ()


def test_terminate_kills_pods_without_grace_and_stays_terminated(make_job, world):
    d = run(
        make_job(spec={"shutdown": "Terminate"}, status={"phase": "Running"}),
        world(pods=RUNNING_POD),
    )
    assert (d.replicas, d.kill_pods, d.status.phase) == (0, True, Phase.TERMINATED)
    again = run(make_job(spec={"shutdown": "Terminate"}, status={"phase": "Terminated"}), world())
    assert (again.kill_pods, again.status.phase, again.events) == (False, Phase.TERMINATED, ())


def test_shutdown_wins_over_suspend(make_job, world):
    d = run(
        make_job(spec={"shutdown": "Stop", "suspend": True}), world(deployment_scaled_down=True)
    )
    assert d.status.phase is Phase.STOPPED


def test_done_checkpoint_succeeds_the_job(make_job, world):
    cp = Checkpoint(offset=800, bytes_total=800, rows_processed=10, rows_rejected=2, done=True)
    d = run(make_job(status={"phase": "Running"}), world(pods=RUNNING_POD, checkpoint=cp))
    assert d.replicas == 0
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.completion_time == NOW
    assert d.status.progress == "100.0%"
    assert condition(d, ConditionType.COMPLETE).status is True
    assert "10 rows (2 rejected)" in d.status.message
    assert reasons(d) == ["Completed"]


def test_worker_error_fails_the_job_in_the_workers_own_words(make_job, world):
    words = "source changed since the checkpoint: size 10 != 12"
    d = run(make_job(status={"phase": "Running"}), world(checkpoint=Checkpoint(error=words)))
    assert d.replicas == 0
    assert d.status.phase is Phase.FAILED
    assert d.status.message == words
    failed = condition(d, ConditionType.FAILED)
    assert (failed.status, failed.reason, failed.message) == (True, "WorkerError", words)
    assert [(e.type, e.reason, e.message) for e in d.events] == [
        (EventType.WARNING, "Failed", words)
    ]


def test_restarts_up_to_the_backoff_limit_are_tolerated(make_job, world):
    d = run(
        make_job(spec={"backoffLimit": 2}, status={"phase": "Running"}),
        world(pods=(("p1", True, False, 2),)),
    )
    assert d.status.phase is Phase.RUNNING
    assert d.status.worker_restarts == 2
    assert reasons(d) == ["WorkerRestarted"]


def test_more_restarts_than_the_backoff_limit_fail_the_job(make_job, world):
    status = {"phase": "Running", "workerRestarts": 2, "workerPod": {"name": "p1", "restarts": 2}}
    d = run(
        make_job(spec={"backoffLimit": 2}, status=status), world(pods=(("p1", False, False, 3),))
    )
    assert d.status.phase is Phase.FAILED
    assert condition(d, ConditionType.FAILED).reason == "BackoffLimitExceeded"
    assert d.replicas == 0


def test_restarts_of_a_new_pod_add_to_those_already_counted(make_job, world):
    status = {"phase": "Running", "workerRestarts": 2, "workerPod": {"name": "old", "restarts": 2}}
    d = run(make_job(status=status), world(pods=(("new", True, False, 1),)))
    assert d.status.worker_restarts == 3
    assert (d.status.worker_pod.name, d.status.worker_pod.restarts) == ("new", 1)


def test_deadline_fails_the_job_and_ignores_suspended_time(make_job, world):
    start = (NOW - timedelta(seconds=100)).isoformat()
    spec = {"activeDeadlineSeconds": 60}
    within = run(
        make_job(
            spec=spec, status={"phase": "Running", "startTime": start, "suspendedSeconds": 50}
        ),
        world(),
    )
    assert within.status.phase is Phase.RUNNING
    assert within.requeue_after == 10
    past = run(make_job(spec=spec, status={"phase": "Running", "startTime": start}), world())
    assert past.status.phase is Phase.FAILED
    assert condition(past, ConditionType.FAILED).reason == "DeadlineExceeded"
    assert past.requeue_after is None


def test_deadline_does_not_run_while_suspended(make_job, world):
    start = (NOW - timedelta(seconds=500)).isoformat()
    since = (NOW - timedelta(seconds=480)).isoformat()
    status = {"phase": "Suspended", "startTime": start, "suspendedSince": since}
    d = run(
        make_job(spec={"activeDeadlineSeconds": 60, "suspend": True}, status=status),
        world(deployment_scaled_down=True),
    )
    assert d.status.phase is Phase.SUSPENDED


def test_a_final_failure_keeps_its_reason(make_job, world):
    first = run(
        make_job(
            spec={"activeDeadlineSeconds": 1},
            status={"phase": "Running", "startTime": "2020-01-01T00:00:00Z"},
        ),
        world(),
    )
    body_status = first.status.to_dict()
    again = run(make_job(spec={"activeDeadlineSeconds": 1}, status=body_status), world())
    assert condition(again, ConditionType.FAILED).reason == "DeadlineExceeded"
    assert again.status.to_dict() == body_status


def test_progress_is_mirrored_from_the_checkpoint(make_job, world):
    cp = Checkpoint(
        offset=300,
        bytes_total=800,
        rows_processed=41,
        rows_rejected=1,
        updated_at="2026-01-02T03:04:00Z",
    )
    eta = NOW + timedelta(minutes=5)
    d = run(make_job(status={"phase": "Running"}), world(pods=RUNNING_POD, checkpoint=cp, eta=eta))
    s = d.status
    assert (s.rows_processed, s.rows_rejected) == (41, 1)
    assert (s.bytes_processed, s.bytes_total) == (300, 800)
    assert s.progress == "37.5%"
    assert s.last_checkpoint_time == NOW - timedelta(seconds=5)
    assert s.estimated_completion_time == eta


def test_unreadable_checkpoint_is_reported_but_not_fatal(make_job, world):
    d = run(
        make_job(status={"phase": "Running"}),
        world(pods=RUNNING_POD, checkpoint_problem="not valid JSON"),
    )
    assert d.status.phase is Phase.RUNNING
    assert "not valid JSON" in d.status.message


def test_deciding_again_on_its_own_output_changes_nothing(make_job, world):
    """Level-triggered: a converged job needs no write and posts no event."""
    cp = Checkpoint(offset=100, bytes_total=800, rows_processed=5)
    w = world(pods=RUNNING_POD, checkpoint=cp)
    first = run(make_job(status={"phase": "Pending"}), w)
    later = world(pods=RUNNING_POD, checkpoint=cp, now=NOW + timedelta(seconds=30))
    second = run(make_job(status=first.status.to_dict()), later)
    assert second.status.to_dict() == first.status.to_dict()
    assert second.events == ()
    assert second.replicas == first.replicas


def test_conditions_carry_the_generation_they_were_computed_for(make_job, world):
    d = run(make_job(generation=7), world())
    assert d.status.observed_generation == 7
    assert {c.observed_generation for c in d.status.conditions} == {7}


def test_status_round_trips_through_its_dict_form(make_job, world):
    d = run(make_job(spec={"suspend": True}, status={"phase": "Running"}), world(pods=GONE_POD))
    assert JobStatus.from_dict(d.status.to_dict()).to_dict() == d.status.to_dict()


def test_a_job_created_suspended_starts_its_deadline_clock_only_when_resumed(make_job, world):
    spec = {"activeDeadlineSeconds": 600}
    created = run(make_job(spec={**spec, "suspend": True}), world(deployment_scaled_down=True))
    assert created.status.phase is Phase.SUSPENDED
    assert (created.status.start_time, created.status.suspended_since) == (None, None)
    resumed_at = NOW + timedelta(hours=1)
    resumed = run(
        make_job(spec=spec, status=created.status.to_dict()),
        world(pods=RUNNING_POD, now=resumed_at),
    )
    assert resumed.status.phase is Phase.RUNNING
    assert (resumed.status.start_time, resumed.status.suspended_seconds) == (resumed_at, 0)
    later = world(pods=RUNNING_POD, now=resumed_at + timedelta(seconds=700))
    past = run(make_job(spec=spec, status=resumed.status.to_dict()), later)
    assert past.status.phase is Phase.FAILED
    assert condition(past, ConditionType.FAILED).reason == "DeadlineExceeded"


def test_suspended_waits_for_the_deployment_to_observe_the_scale_down(make_job, world):
    """The pod list may be empty only because the ReplicaSet has not created the pod yet."""
    job = make_job(spec={"suspend": True}, status={"phase": "Pending"})
    d = run(job, world())
    assert (d.replicas, d.status.phase) == (0, Phase.SUSPENDING)
    stop = run(make_job(spec={"shutdown": "Stop"}, status={"phase": "Running"}), world())
    assert stop.status.phase is Phase.STOPPING
    not_gone = run(job, world(pods=GONE_POD, deployment_scaled_down=True))
    assert not_gone.status.phase is Phase.SUSPENDING


def test_a_done_checkpoint_wins_over_a_stop(make_job, world):
    cp = Checkpoint(offset=800, bytes_total=800, rows_processed=10, done=True)
    job = make_job(spec={"shutdown": "Stop"}, status={"phase": "Stopping"})
    d = run(job, world(pods=GONE_POD, checkpoint=cp))
    assert d.status.phase is Phase.SUCCEEDED
    assert condition(d, ConditionType.COMPLETE).status is True
    assert reasons(d) == ["Completed"]


def test_restarts_after_the_last_row_are_not_counted(make_job, world):
    cp = Checkpoint(offset=800, bytes_total=800, rows_processed=10, done=True)
    status = {"phase": "Running", "workerPod": {"name": "p1", "restarts": 0}}
    done = run(make_job(status=status), world(pods=(("p1", True, False, 1),), checkpoint=cp))
    assert done.status.worker_restarts == 0
    assert "WorkerRestarted" not in reasons(done)
    final = run(
        make_job(status=done.status.to_dict()), world(pods=(("p1", True, False, 2),), checkpoint=cp)
    )
    assert (final.status.worker_restarts, final.events) == (0, ())


def test_a_name_held_by_a_foreign_object_fails_the_job_and_stops_the_worker(make_job, world):
    taken = "ServiceAccount team-a/orders-worker already exists and was not created by ..."
    d = run(make_job(), world(pods=RUNNING_POD, name_taken=taken))
    assert d.replicas == 0
    assert d.status.phase is Phase.FAILED
    failed = condition(d, ConditionType.FAILED)
    assert (failed.status, failed.reason, failed.message) == (True, "NameTaken", taken)
    assert reasons(d) == ["Failed"]


def test_a_final_phase_stays_even_when_a_name_is_taken_later(make_job, world):
    job = make_job(status={"phase": "Succeeded"})
    assert run(job, world(name_taken="ConfigMap x")).status.phase is Phase.SUCCEEDED


def test_a_worker_retrying_shows_why_in_progressing(make_job, world):
    from collectjob_api.checkpoint import Retrying

    why = Retrying("SourceUnavailable", "URLError: <urlopen error refused>", "2026-01-01T00:00:00Z")
    d = run(
        make_job(status={"phase": "Running"}),
        world(pods=RUNNING_POD, checkpoint=Checkpoint(retrying=why)),
    )
    progressing = condition(d, ConditionType.PROGRESSING)
    assert d.status.phase is Phase.RUNNING and progressing.status is True
    assert progressing.reason == "SourceUnavailable"
    assert "refused" in progressing.message and "2026-01-01T00:00:00Z" in progressing.message
