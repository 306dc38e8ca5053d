"""The API module's pure part: the ownership patch after a 409, and leftovers refused."""

from __future__ import annotations

import pytest

from collectjob_operator import kube
from collectjob_operator.kube import LeftoverError


def desired() -> dict:
    return {
        "kind": "Role",
        "metadata": {"labels": {"a": "1"}, "ownerReferences": [{"uid": "u1", "controller": True}]},
        "rules": [{"verbs": ["get"]}],
    }


def test_nothing_to_patch_when_ours_already():
    actual = {"metadata": {"labels": {"a": "1", "b": "2"},
                           "ownerReferences": [{"uid": "u1", "controller": True}]},
              "rules": [{"verbs": ["get"]}]}  # fmt: skip
    assert kube.ownership_patch(actual, desired(), ("rules",)) == {}


def test_patch_adopts_an_unowned_object_and_restores_compared_fields_only():
    actual = {"metadata": {}, "rules": [], "other": 1}
    patch = kube.ownership_patch(actual, desired(), ("rules",))
    assert patch == {
        "metadata": {"labels": {"a": "1"}, "ownerReferences": [{"uid": "u1", "controller": True}]},
        "rules": [{"verbs": ["get"]}],
    }


def test_patch_keeps_owners_that_do_not_control_the_object():
    actual = {"metadata": {"labels": {"a": "1"}, "ownerReferences": [{"uid": "other"}]},
              "rules": [{"verbs": ["get"]}]}  # fmt: skip
    patch = kube.ownership_patch(actual, desired(), ("rules",))
    assert patch == {
        "metadata": {"ownerReferences": [{"uid": "other"}, {"uid": "u1", "controller": True}]}
    }


def test_an_object_left_by_a_deleted_job_of_the_same_name_is_not_taken_over():
    actual = {"kind": "ConfigMap",
              "metadata": {"name": "orders-checkpoint", "namespace": "team-a",
                           "ownerReferences": [{"uid": "old", "controller": True}]}}  # fmt: skip
    with pytest.raises(LeftoverError) as refused:
        kube.ownership_patch(actual, desired(), ())
    assert str(refused.value) == (
        "waiting for the garbage collector to remove ConfigMap team-a/orders-checkpoint left "
        "by a previous CollectJob with uid old (this one is u1)"
    )
