"""The one reconcile path: observe a job's world, `decide`, apply the decision.

Every trigger (the job's create/resume/update, any change of its Deployment, pods or
checkpoint ConfigMap, a scheduled look-again) funnels into `Reconciler.trigger`, which
runs at most one reconcile per job at a time and folds triggers that arrive meanwhile
into one more pass. What it does depends only on the state it reads, never on the event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectjob_api.checkpoint import Checkpoint, CheckpointError
from collectjob_api.contract import (
    CHECKPOINT_KEY,
    LABEL_COMPONENT,
    LABEL_JOB,
    WORKER_COMPONENT,
    checkpoint_configmap_name,
    worker_name,
)
from collectjob_operator import manifests, metrics
from collectjob_operator.decisions import WAS_SUSPENDED, Decision, PodView, World, decide
from collectjob_operator.job import CollectJob, JobRef
from collectjob_operator.kube import Kube, LeftoverError, Obj, refuse_leftover
from collectjob_operator.status import JobStatus, Phase, parse_time
from collectjob_operator.throughput import Throughput

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0
"""Progress-only status patches are coalesced to at most one per this many seconds."""
MAX_BACKOFF = 30.0


@dataclass
class _JobState:
    """What the operator remembers about one job between reconciles. Losing it (restart)
    costs one extra write per object, never correctness."""

    uid: str = ""
    spec_version: tuple[str, int] = ("", 0)
    """The job's (uid, metadata.generation) last handed to a reconcile."""
    running: bool = False
    dirty: bool = False
    failures: int = 0
    children_ensured: bool = False
    deployment_generation: int | None = None
    last_status_patch: float = 0.0
    last_reconciled: float = 0.0
    requeue: asyncio.TimerHandle | None = None
    suspend_seen: float | None = None
    resume_seen: float | None = None
    throughput: Throughput = field(default_factory=Throughput)

    def adopt(self, uid: str) -> None:
        """Start over for a new job that took an old job's name; keep the trigger flags."""
        self.uid = uid
        self.children_ensured = False
        self.deployment_generation = None
        self.last_status_patch = 0.0
        self.suspend_seen = self.resume_seen = None
        self.throughput = Throughput()


@dataclass(frozen=True)
class _Observed:
    deployment: Obj | None
    configmap: Obj | None
    pods: list[Obj]


class Reconciler:
    def __init__(self, kube: Kube, worker_image: str, jobs: metrics.JobsCollector) -> None:
        self._kube = kube
        self._image = worker_image
        self._jobs_metrics = jobs
        self._states: dict[JobRef, _JobState] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def trigger(self, ref: JobRef) -> None:
        """Reconcile `ref` now, or once more right after the reconcile already running."""
        state = self._states.setdefault(ref, _JobState())
        state.dirty = True
        if state.running:
            return
        state.running = True
        try:
            while state.dirty:
                state.dirty = False
                await self._attempt(ref, state)
        finally:
            state.running = False

    async def trigger_on_change(self, ref: JobRef, spec_version: tuple[str, int]) -> None:
        """Reconcile when the job is new to this operator or its spec has changed."""
        state = self._states.setdefault(ref, _JobState())
        if state.spec_version == spec_version:
            return
        state.spec_version = spec_version
        await self.trigger(ref)

    async def trigger_progress(self, ref: JobRef) -> None:
        """A checkpoint moved on: reconcile at most about once per STATUS_INTERVAL.

        A worker may commit many small chunks per second; each would otherwise cost a full
        reconcile. Done and error checkpoints are seen at most that much later.
        """
        state = self._states.setdefault(ref, _JobState())
        wait = state.last_reconciled + STATUS_INTERVAL - time.monotonic()
        if wait > 0:
            self._schedule(ref, state, wait)
            return
        await self.trigger(ref)

    def forget(self, ref: JobRef) -> None:
        """The job is gone: drop its memory and metrics (its children go by GC)."""
        state = self._states.pop(ref, None)
        if state is not None and state.requeue is not None:
            state.requeue.cancel()
        self._jobs_metrics.forget(ref)

    @property
    def tracked(self) -> int:
        return len(self._states)

    async def _attempt(self, ref: JobRef, state: _JobState) -> None:
        started = time.perf_counter()
        try:
            await self._reconcile(ref, state)
            state.failures = 0
        except Exception as e:
            state.failures += 1
            delay = min(MAX_BACKOFF, 0.5 * 2**state.failures)
            if isinstance(e, LeftoverError):
                # Expected right after a job is deleted and created again: no traceback.
                log.warning("CollectJob %s: %s; retrying in %.1fs", ref, e, delay)
            else:
                metrics.RECONCILE_ERRORS.inc()
                log.exception("reconciling CollectJob %s failed; retrying in %.1fs", ref, delay)
            self._schedule(ref, state, delay)
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
            state.last_reconciled = time.monotonic()

    def _schedule(self, ref: JobRef, state: _JobState, delay: float) -> None:
        """Look at the job again after `delay` seconds, unless an earlier look is due."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if state.requeue is not None and not state.requeue.cancelled():
            if state.requeue.when() <= when:
                return
            state.requeue.cancel()

        def fire() -> None:
            state.requeue = None
            if self._states.get(ref) is state:
                task = loop.create_task(self.trigger(ref))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        state.requeue = loop.call_at(when, fire)

    async def _reconcile(self, ref: JobRef, state: _JobState) -> None:
        body = await asyncio.to_thread(self._kube.get_job, ref)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget(ref)
            return
        job = CollectJob.from_body(body)
        if state.uid != job.uid:
            state.adopt(job.uid)
        if not state.children_ensured:
            await asyncio.to_thread(self._ensure_children, job)
            state.children_ensured = True
        observed = await self._observe(job)
        # Never read a deleted namesake's checkpoint nor drive its worker: wait for the GC.
        for child in (observed.configmap, observed.deployment):
            if child is not None:
                refuse_leftover(child, job.uid)
        if observed.configmap is None:
            await asyncio.to_thread(self._kube.ensure, manifests.checkpoint_configmap(job))
        world = self._world(job, state, observed)
        decision = decide(job.spec, job.generation, job.status, world)
        await self._apply_workload(job, state, decision, observed.deployment, world)
        await self._apply_status(job, state, decision, world)
        if decision.requeue_after is not None:
            self._schedule(ref, state, decision.requeue_after)

    def _ensure_children(self, job: CollectJob) -> None:
        self._kube.ensure(manifests.checkpoint_configmap(job))
        self._kube.ensure(manifests.service_account(job))
        self._kube.ensure(manifests.role(job), compare=("rules",))
        self._kube.ensure(manifests.role_binding(job), compare=("subjects",))

    async def _observe(self, job: CollectJob) -> _Observed:
        selector = {LABEL_JOB: job.name, LABEL_COMPONENT: WORKER_COMPONENT}
        deployment, configmap, pods = await asyncio.gather(
            asyncio.to_thread(self._kube.get, "Deployment", job.namespace, worker_name(job.name)),
            asyncio.to_thread(
                self._kube.get, "ConfigMap", job.namespace, checkpoint_configmap_name(job.name)
            ),
            asyncio.to_thread(self._kube.list_pods, job.namespace, selector),
        )
        return _Observed(deployment, configmap, pods)

    def _world(self, job: CollectJob, state: _JobState, observed: _Observed) -> World:
        now = datetime.now(UTC)
        checkpoint, problem = _read_checkpoint(job, observed.configmap)
        eta = None
        if checkpoint is not None and not checkpoint.done:
            at = parse_time(checkpoint.updated_at) or now
            state.throughput.observe(at, checkpoint.offset)
            eta = state.throughput.eta(checkpoint.offset, checkpoint.bytes_total)
        return World(
            now=now,
            pods=tuple(_pod_view(p) for p in observed.pods),
            checkpoint=checkpoint,
            checkpoint_problem=problem,
            checkpoint_configmap=checkpoint_configmap_name(job.name),
            eta=eta,
            deployment_scaled_down=_scaled_down(observed.deployment),
        )

    async def _apply_workload(
        self,
        job: CollectJob,
        state: _JobState,
        decision: Decision,
        actual: Obj | None,
        world: World,
    ) -> None:
        image = job.spec.worker.image or self._image
        desired = manifests.worker_deployment(job, image, decision.replicas)
        if actual is None:
            created = await asyncio.to_thread(self._kube.create, desired)
            if created is None:
                state.dirty = True  # created meanwhile by someone else: look again
            else:
                state.deployment_generation = created["metadata"]["generation"]
        elif (
            manifests.deployment_drifted(actual, desired)
            or actual["metadata"].get("generation") != state.deployment_generation
        ):
            meta = actual["metadata"]
            annotations = {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]}
            desired["metadata"]["annotations"] = annotations
            replaced = await asyncio.to_thread(self._kube.replace, desired, meta["resourceVersion"])
            if replaced is None:
                state.dirty = True  # changed since we read it: look again
            else:
                state.deployment_generation = replaced["metadata"]["generation"]
        if decision.kill_pods:
            await asyncio.gather(
                *(
                    asyncio.to_thread(self._kube.delete_pod_now, job.namespace, p.name)
                    for p in world.pods
                )
            )

    async def _apply_status(
        self, job: CollectJob, state: _JobState, decision: Decision, world: World
    ) -> None:
        current, desired = job.status, decision.status
        running = any(p.running and not p.terminating for p in world.pods)
        self._observe_latencies(job, state, desired, observed_running=running)
        self._jobs_metrics.record(job.ref, desired)
        if current.to_dict() != desired.to_dict():
            elapsed = time.monotonic() - state.last_status_patch
            if current.progress_only_change(desired) and elapsed < STATUS_INTERVAL:
                self._schedule(job.ref, state, STATUS_INTERVAL - elapsed)
            else:
                await asyncio.to_thread(self._kube.patch_job_status, job.ref, desired.to_dict())
                state.last_status_patch = time.monotonic()
        if desired.phase != current.phase and desired.phase is not None:
            metrics.PHASE_TRANSITIONS.labels(phase=str(desired.phase)).inc()
            log.info("CollectJob %s: %s -> %s", job.ref, current.phase, desired.phase)
        for event in decision.events:
            await asyncio.to_thread(
                self._kube.post_event, job.ref, job.uid, str(event.type), event.reason,
                event.message,
            )  # fmt: skip

    def _observe_latencies(
        self, job: CollectJob, state: _JobState, desired: JobStatus, observed_running: bool
    ) -> None:
        """Suspend: spec seen -> Suspended. Resume: spec seen -> a worker pod running."""
        previous, phase = job.status.phase, desired.phase
        now = time.monotonic()
        if phase is Phase.SUSPENDING and state.suspend_seen is None:
            state.suspend_seen = now
        if phase is Phase.SUSPENDED and previous is not Phase.SUSPENDED:
            if state.suspend_seen is not None:
                metrics.SUSPEND_LATENCY.observe(now - state.suspend_seen)
            state.suspend_seen = None
        if phase is Phase.RUNNING and previous in WAS_SUSPENDED:
            state.resume_seen = now
        if state.resume_seen is not None and observed_running:
            metrics.RESUME_LATENCY.observe(now - state.resume_seen)
            state.resume_seen = None


def _read_checkpoint(job: CollectJob, configmap: Obj | None) -> tuple[Checkpoint | None, str]:
    text = ((configmap or {}).get("data") or {}).get(CHECKPOINT_KEY)
    if not text:
        return None, ""
    try:
        return Checkpoint.from_json(text), ""
    except CheckpointError as e:
        log.warning("CollectJob %s: checkpoint unreadable: %s", job.ref, e)
        return None, str(e)


def _scaled_down(deployment: Obj | None) -> bool:
    """The Deployment asks for no pods, its controller has acted on that and counts none.

    A missing Deployment is not: it is about to be created, and the pod list read before
    that says nothing about what its ReplicaSet will do.
    """
    if deployment is None:
        return False
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    status = deployment.get("status") or {}
    return (
        spec.get("replicas") == 0
        and int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
        and not status.get("replicas")
    )


def _pod_view(pod: Obj) -> PodView:
    status: dict[str, Any] = pod.get("status") or {}
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or ())
    return PodView(
        name=pod["metadata"]["name"],
        running=status.get("phase") == "Running",
        terminating=bool(pod["metadata"].get("deletionTimestamp")),
        restarts=restarts,
    )
