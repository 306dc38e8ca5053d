"""CollectJobClient.wait_all: one watch per namespace until every job got where it was asked
(the watch itself is replaced by scripted events; the cluster tests run it for real)."""

from __future__ import annotations

from collections.abc import Iterator

from kubernetes import client

from collectjob_api.client import CollectJobClient, Job

SUSPENDED = frozenset({"Suspended"})


def job(namespace: str, name: str, phase: str) -> Job:
    return Job.from_object(
        {"metadata": {"name": name, "namespace": namespace}, "status": {"phase": phase}}
    )


class Scripted(CollectJobClient):
    """Each call of watch() plays the next script (its events, in order)."""

    def __init__(self, scripts: list[list[tuple[str, Job]]]) -> None:
        super().__init__(client.ApiClient())
        self.scripts, self.watched = scripts, []

    def watch(self, namespace, *, name="", selector="", timeout=60) -> Iterator[tuple[str, Job]]:
        self.watched.append(namespace)
        yield from self.scripts.pop(0) if self.scripts else []


def test_one_watch_per_namespace_until_every_job_arrives() -> None:
    api = Scripted(
        [
            [
                ("ADDED", job("a", "one", "Suspending")),
                ("ADDED", job("a", "two", "Suspended")),
                ("ADDED", job("a", "other", "Running")),
                ("MODIFIED", job("a", "one", "Suspended")),
                ("MODIFIED", job("a", "other", "Suspended")),  # never read: the watch ended
            ],
            [("ADDED", job("b", "three", "Failed"))],
        ]
    )
    seen = api.wait_all([("b", "three"), ("a", "one"), ("a", "two")], SUSPENDED, timeout=5)
    assert api.watched == ["a", "b"]
    assert {ref: j.phase for ref, j in seen.items()} == {
        ("a", "one"): "Suspended",
        ("a", "two"): "Suspended",
        ("b", "three"): "Failed",  # final: waiting longer would not change it
    }


def test_a_job_deleted_while_waited_for_is_left_out() -> None:
    api = Scripted([[("ADDED", job("a", "one", "Running")), ("DELETED", job("a", "one", ""))]])
    assert api.wait_all([("a", "one")], SUSPENDED, timeout=5) == {}


def test_a_job_that_does_not_arrive_in_time_is_returned_as_last_seen() -> None:
    api = Scripted([[("ADDED", job("a", "one", "Suspending"))]])
    seen = api.wait_all([("a", "one")], SUSPENDED, timeout=0.2)
    assert seen[("a", "one")].phase == "Suspending"
