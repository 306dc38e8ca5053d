"""No worker starts while the admission policy that checks CollectJob authors is missing."""

from __future__ import annotations

import asyncio

from collectjob_operator import guard
from collectjob_operator.cache import WatchCache
from collectjob_operator.job import JobRef
from collectjob_operator.metrics import JobsCollector
from collectjob_operator.reconciler import Reconciler
from collectjob_operator.status import JobStatus, Phase

from .conftest import NOW

REF = JobRef("team-a", "orders")


class Policy:
    """The admission policy as the guard reads it: present or not, reads counted."""

    def __init__(self, bound: bool) -> None:
        self.bound = bound
        self.reads: list[str] = []

    def __call__(self, name: str) -> bool:
        self.reads.append(name)
        return self.bound


def installed(admission: guard.AdmissionGuard) -> bool:
    return asyncio.run(admission.installed())


def test_a_seen_policy_is_trusted_for_a_while_a_missing_one_is_read_every_time():
    policy, now = Policy(bound=True), [0.0]
    admission = guard.AdmissionGuard(policy, clock=lambda: now[0])
    assert installed(admission) and installed(admission)
    assert policy.reads == [guard.ADMISSION_POLICY]
    now[0] = guard.CHECK_INTERVAL + 1
    policy.bound = False
    assert not installed(admission) and not installed(admission)
    assert len(policy.reads) == 3


def test_reconciles_asking_at_once_share_one_read():
    policy = Policy(bound=False)
    admission = guard.AdmissionGuard(policy)

    async def burst() -> list[bool]:
        return await asyncio.gather(*(admission.installed() for _ in range(8)))

    assert asyncio.run(burst()) == [False] * 8
    assert policy.reads == [guard.ADMISSION_POLICY]
    assert not installed(admission), "a missing policy is read again by the next reconcile"
    assert len(policy.reads) == 2


def test_an_unreadable_policy_counts_as_missing():
    def broken(name: str) -> bool:
        raise TimeoutError("read timed out")

    assert not installed(guard.AdmissionGuard(broken))


def test_held_status_says_why_and_keeps_its_transition_time():
    status = guard.held(JobStatus(), 3, NOW)
    assert status.phase is Phase.PENDING and status.message == guard.MESSAGE
    (condition,) = status.conditions
    assert (condition.status, condition.reason) == (False, guard.REASON)
    assert (
        "collectjob-author-rights" in condition.message and "--allow-unguarded" in condition.message
    )
    later = guard.held(status, 3, NOW.replace(year=2027))
    assert later.conditions[0].last_transition_time == NOW
    assert later.to_dict() == status.to_dict()


def test_reconciler_creates_nothing_while_the_policy_is_missing(fake_kube):
    kube, policy = fake_kube(), Policy(bound=False)
    reconciler = Reconciler(
        kube,
        "img",
        JobsCollector(),
        WatchCache(kube.indices()),
        admission=guard.AdmissionGuard(policy),
    )
    asyncio.run(reconciler.process(REF))
    assert kube.objects == {}
    assert kube.status_patches[-1]["conditions"][0]["reason"] == guard.REASON
    policy.bound = True
    asyncio.run(reconciler.process(REF))
    assert ("Deployment", "team-a", "orders-worker") in kube.objects
