"""The API module's pure part: whose an existing object is, and what happens if not ours."""

from __future__ import annotations

import pytest

from collectjob_operator import kube
from collectjob_operator.kube import LeftoverError, NameTakenError


def obj(owners: list[dict]) -> dict:
    meta = {"name": "etl-worker", "namespace": "team-a", "ownerReferences": owners}
    return {"kind": "ServiceAccount", "metadata": meta}


def test_an_object_this_job_controls_is_ours():
    kube.check_ownership(obj([{"uid": "u1", "controller": True}]), "u1", "etl")


def test_an_object_without_a_controller_is_never_adopted():
    with pytest.raises(NameTakenError) as refused:
        kube.check_ownership(obj([]), "u1", "etl")
    assert str(refused.value) == (
        "ServiceAccount team-a/etl-worker already exists and was not created by this "
        "CollectJob (no controller); it is left alone: delete or rename it, or give the job "
        "another name"
    )


def test_an_object_we_only_co_own_is_not_ours():
    owners = [
        {"uid": "u1", "controller": False},
        {"uid": "x", "kind": "Foo", "name": "f", "controller": True},
    ]
    with pytest.raises(NameTakenError, match=r"\(Foo f\)"):
        kube.check_ownership(obj(owners), "u1", "etl")


def test_an_object_left_by_a_deleted_job_of_the_same_name_is_waited_for():
    owners = [{"uid": "old", "kind": "CollectJob", "name": "etl", "controller": True}]
    with pytest.raises(LeftoverError) as refused:
        kube.check_ownership(obj(owners), "u1", "etl")
    assert str(refused.value) == (
        "waiting for the garbage collector to remove ServiceAccount team-a/etl-worker left "
        "by a previous CollectJob with uid old (this one is u1)"
    )


def test_another_collectjobs_object_is_taken_not_left_over():
    owners = [{"uid": "x", "kind": "CollectJob", "name": "other", "controller": True}]
    with pytest.raises(NameTakenError):
        kube.check_ownership(obj(owners), "u1", "etl")
