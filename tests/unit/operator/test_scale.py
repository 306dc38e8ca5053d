"""When a worker's scale-down is complete: from the Deployment, or sooner its ReplicaSets."""

from __future__ import annotations

from typing import Any

import pytest

from collectjob_operator.scale import scaled_down

UID = "d-uid"


def workload(replicas: int, generation: int, observed: int, counted: int, **meta: Any) -> dict:
    return {
        "metadata": {"generation": generation, **meta},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": counted},
    }


def replicaset(replicas: int, generation: int, observed: int, counted: int, owner: str = UID):
    refs = [{"kind": "Deployment", "uid": owner, "controller": True}]
    return workload(replicas, generation, observed, counted, ownerReferences=refs)


STALE_DEPLOYMENT = workload(0, 4, 4, 1, uid=UID)
"""Asks for zero, its controller has seen that, its status still counts the pod."""


def test_no_deployment_runs_nothing():
    assert scaled_down(None, [])


def test_a_deployment_at_zero_is_enough():
    assert scaled_down(workload(0, 4, 4, 0, uid=UID), [])


@pytest.mark.parametrize(
    "deployment",
    [workload(1, 4, 4, 0, uid=UID), workload(0, 4, 3, 0, uid=UID)],
    ids=["asks-for-a-pod", "spec-not-seen"],
)
def test_a_deployment_not_yet_at_zero_is_not_scaled_down_whatever_its_replicasets_say(deployment):
    assert not scaled_down(deployment, [replicaset(0, 2, 2, 0)])


def test_its_replicasets_at_zero_complete_the_scale_down_before_its_status_does():
    assert scaled_down(STALE_DEPLOYMENT, [replicaset(0, 2, 2, 0), replicaset(0, 1, 1, 0)])


@pytest.mark.parametrize(
    "replicasets",
    [
        [],
        [replicaset(0, 2, 2, 0, owner="another-deployment")],
        [replicaset(0, 2, 2, 0), replicaset(1, 3, 3, 1)],
        [replicaset(0, 3, 2, 0)],
        [replicaset(0, 2, 2, 1)],
    ],
    ids=["none-seen", "not-its-own", "one-still-up", "spec-not-seen", "counts-a-pod"],
)
def test_replicasets_that_do_not_all_report_zero_leave_it_to_the_deployment(replicasets):
    assert not scaled_down(STALE_DEPLOYMENT, replicasets)
