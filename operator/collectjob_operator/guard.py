"""The operator starts workers only while the API server checks CollectJob authors.

Without the admission policy `collectjob-author-rights` (crds/admission-policy.yaml) any
user allowed to create a CollectJob could make the operator run a pod with Secrets, images
or volumes that user may not use: the operator would be a confused deputy. So while the
policy or its binding is missing, jobs are held with a condition saying so, unless the
operator runs with `--allow-unguarded` (then no guard is made at all).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from collectjob_operator.status import Condition, ConditionType, JobStatus, Phase

log = logging.getLogger(__name__)

ADMISSION_POLICY = "collectjob-author-rights"
REASON = "AdmissionPolicyMissing"
MESSAGE = (
    f"Not starting a worker: the ValidatingAdmissionPolicy {ADMISSION_POLICY} or its binding "
    "is not installed, so the API server does not check that this job's author may use what "
    "the job names (install crds/, or run the operator with --allow-unguarded)"
)
CHECK_INTERVAL = 30.0
"""A seen policy is trusted this long before it is read again; a missing one is re-read on
every reconcile."""
RETRY_AFTER = 10.0
"""A held job looks again this many seconds later."""


class AdmissionGuard:
    def __init__(
        self, policy_bound: Callable[[str], bool], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._policy_bound = policy_bound
        self._clock = clock
        self._seen_at: float | None = None
        self._reading: asyncio.Future[bool] | None = None

    async def installed(self) -> bool:
        """Whether the policy and its binding are installed (cached for CHECK_INTERVAL).

        Reconciles asking at once share one read: when the cache expires in a burst, every
        reconcile worker would otherwise read the same two objects. The read is shielded,
        so a reconcile cancelled at its deadline does not cancel it for the others.
        """
        now = self._clock()
        if self._seen_at is not None and now - self._seen_at < CHECK_INTERVAL:
            return True
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(now))
        return await asyncio.shield(self._reading)

    async def _read(self, now: float) -> bool:
        try:
            bound = await asyncio.to_thread(self._policy_bound, ADMISSION_POLICY)
        except Exception as e:  # an unreadable policy guards nothing: hold, and say why
            log.warning("cannot read ValidatingAdmissionPolicy %s: %s", ADMISSION_POLICY, e)
            bound = False
        finally:
            self._reading = None
        self._seen_at = now if bound else None
        return bound


def held(current: JobStatus, generation: int, now: datetime) -> JobStatus:
    """The status of a job held for the missing policy: Pending, Progressing False."""
    old = current.condition(ConditionType.PROGRESSING)
    unchanged = old is not None and not old.status and old.reason == REASON
    condition = Condition(
        type=ConditionType.PROGRESSING,
        status=False,
        reason=REASON,
        message=MESSAGE,
        last_transition_time=old.last_transition_time if unchanged and old else now,
        observed_generation=generation,
    )
    others = tuple(c for c in current.conditions if c.type is not ConditionType.PROGRESSING)
    return current.evolve(
        phase=current.phase or Phase.PENDING,
        observed_generation=generation,
        message=MESSAGE,
        conditions=(condition, *others),
    )
