"""The one reconcile path: observe a job's world, `decide`, apply the decision.

Every trigger (the job's create/resume/update, any change of one of its children, a
scheduled look-again) puts the job's name on one work queue. A fixed pool of workers
takes names off it in order (fair: a job triggered again goes to the back), and a name
is never handed to two workers at once: triggers that arrive while it is being
reconciled fold into one more pass, as in controller-runtime's workqueue. What a
reconcile does depends only on the state it reads, never on the event.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, TypeVar

from collectjob_api.backoff import Backoff
from collectjob_api.checkpoint import Checkpoint, CheckpointError
from collectjob_api.contract import CHECKPOINT_KEY, checkpoint_configmap_name, worker_name
from collectjob_api.rfc3339 import parse_time
from collectjob_operator import guard, manifests, metrics
from collectjob_operator.cache import WatchCache
from collectjob_operator.decisions import WAS_SUSPENDED, Decision, PodView, World, decide
from collectjob_operator.events import SENDERS, Event, EventRecorder
from collectjob_operator.job import CollectJob, JobRef
from collectjob_operator.kube import (
    Kube,
    LeftoverError,
    NameTakenError,
    Obj,
    check_ownership,
)
from collectjob_operator.scale import scaled_down
from collectjob_operator.status import JobStatus, Phase
from collectjob_operator.throughput import Throughput

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_INTERVAL = 1.0
"""Progress-only status patches are coalesced to at most one per this many seconds."""
RETRY_BACKOFF = Backoff(initial=1.0, maximum=30.0)
"""A failed reconcile is looked at again after 1, 2, 4 ... seconds, at most 30 (the project's
one schedule, collectjob_api.backoff); a success forgets the failures."""
STALE_RETRY = 0.2
"""A status write refused because the job changed since it was read is tried again this
much later, once the watch has streamed the change (a label edit triggers nothing else)."""
DEFAULT_WORKERS = 8
DEFAULT_DEADLINE = 60.0


class Priority(IntEnum):
    """Which passes go first when the workers are busy; lower first."""

    SPEC = 0
    """A person asked for something: a job's spec changed, or the job is new."""
    CHILD = 1
    """A child changed: a pod ended, a Deployment rolled out, a child was edited."""
    ROUTINE = 2
    """Progress to report, a scheduled look-again."""


def api_threads(workers: int) -> int:
    """The API calls in flight at most (the reconciler's threads): two per reconcile worker,
    as a pass writes some children at once, and one per event sender."""
    return workers * 2 + SENDERS


@dataclass
class _JobMemory:
    """What the operator remembers about one job (one UID) between reconciles. Losing it
    (restart) costs one extra write per object, never correctness. Keyed by UID, so a job
    created again under a deleted job's name never inherits it."""

    deployment_generation: int | None = None
    """The generation of the worker Deployment as this operator last wrote it."""
    last_status_patch: float = 0.0
    suspend_seen: float | None = None
    resume_seen: float | None = None
    throughput: Throughput = field(default_factory=Throughput)
    written: Obj | None = None
    """The job as this operator's last status write left it."""
    superseded: set[str] = field(default_factory=set)
    """The job's resourceVersions that status writes replaced since the cache last caught
    up. While the cache holds one of them, the job is read from `written`, so a pass right
    after a write does not decide on the job's past."""


@dataclass
class _Children:
    configmap: Obj | None
    deployment: Obj | None
    deployment_foreign: bool
    taken: list[str]


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        worker_image: str,
        jobs: metrics.JobsCollector,
        cache: WatchCache,
        workers: int = DEFAULT_WORKERS,
        deadline: float = DEFAULT_DEADLINE,
        admission: guard.AdmissionGuard | None = None,
        url_allowlist: str = "",
    ) -> None:
        """`admission` None: workers start without the admission policy (--allow-unguarded).
        `url_allowlist`: internal hosts every worker may reach (OperatorConfig)."""
        self._kube = kube
        self._admission = admission
        self._image = worker_image
        self._url_allowlist = url_allowlist
        self._jobs_metrics = jobs
        self._cache = cache
        self._workers = workers
        self._deadline = deadline
        self._executor = ThreadPoolExecutor(
            max_workers=api_threads(workers), thread_name_prefix="kube"
        )
        self._events = EventRecorder(self._post_event)
        self._queue: asyncio.PriorityQueue[tuple[Priority, int, JobRef]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._dirty: dict[JobRef, Priority] = {}
        """The jobs waiting for a pass, with the priority they wait with."""
        self._processing: set[JobRef] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._memory: dict[str, _JobMemory] = {}
        self._versions: dict[JobRef, tuple[str, int]] = {}
        self._failures: dict[JobRef, int] = {}
        self._timers: dict[JobRef, asyncio.TimerHandle] = {}
        self._last_done: dict[JobRef, float] = {}
        self._progress = time.monotonic()

    def start(self) -> None:
        """Start the worker pool and the event senders on the running loop."""
        self._tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-worker-{i}")
            for i in range(self._workers)
        ]
        self._events.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._events.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, ref: JobRef, priority: Priority = Priority.ROUTINE) -> None:
        """Reconcile `ref` soon; once more after the current pass if one is running.

        Spec changes go before child changes, and those before routine passes: a mass
        suspend or a resume is not queued behind the pod and Deployment events of the
        jobs suspended just before it, nor behind the progress of every running job.
        Within each priority the order is first come, first served.
        """
        if not self.busy:
            self._progress = time.monotonic()  # idle until now: the stall clock starts here
        queued = self._dirty.get(ref)
        if queued is not None and queued <= priority:
            return
        self._dirty[ref] = priority
        if ref not in self._processing:
            self._queue.put_nowait((priority, next(self._order), ref))

    def trigger_on_change(self, ref: JobRef, spec_version: tuple[str, int]) -> None:
        """Reconcile when the job is new to this operator or its spec has changed."""
        if self._versions.get(ref) == spec_version:
            return
        self._versions[ref] = spec_version
        self.enqueue(ref, Priority.SPEC)

    def trigger_progress(self, ref: JobRef) -> None:
        """A checkpoint moved on: reconcile at most about once per STATUS_INTERVAL.

        A worker may commit many small chunks per second; each would otherwise cost a full
        reconcile. Done and error checkpoints are seen at most that much later.
        """
        wait = self._last_done.get(ref, 0.0) + STATUS_INTERVAL - time.monotonic()
        if wait > 0:
            self._schedule(ref, wait)
        else:
            self.enqueue(ref)

    def forget(self, ref: JobRef, uid: str) -> None:
        """The job with this UID is gone: drop its memory and metrics (its children go by
        GC). A reconcile of `ref` still running keeps its own reference and ends on its
        own; a new job of the same name has another UID, so nothing of it is dropped."""
        self._memory.pop(uid, None)
        if self._versions.get(ref, ("", 0))[0] != uid:
            return
        del self._versions[ref]
        timer = self._timers.pop(ref, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(ref, None)
        self._last_done.pop(ref, None)
        self._jobs_metrics.forget(ref)

    @property
    def tracked(self) -> int:
        return len(self._versions)

    @property
    def busy(self) -> bool:
        """Some job is queued or being reconciled."""
        return bool(self._dirty or self._processing)

    def stalled_for(self) -> float:
        """Seconds the loop has had work but finished no reconcile (0 while idle).

        Every reconcile ends within its deadline, so a long stall means the workers are
        gone or the loop is blocked: liveness turns red and the pod is restarted.
        """
        return time.monotonic() - self._progress if self.busy else 0.0

    async def _work(self) -> None:
        while True:
            priority, _, ref = await self._queue.get()
            if self._dirty.get(ref) != priority or ref in self._processing:
                continue  # an entry superseded by a more urgent one, or already running
            del self._dirty[ref]
            self._processing.add(ref)
            try:
                await self.process(ref)
            finally:
                self._processing.discard(ref)
                again = self._dirty.get(ref)
                if again is not None:
                    self._queue.put_nowait((again, next(self._order), ref))

    async def process(self, ref: JobRef) -> None:
        """One reconcile of `ref` within the deadline; a failure is retried with backoff."""
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._reconcile(ref), self._deadline)
            self._failures.pop(ref, None)
        except Exception as e:
            failures = self._failures[ref] = self._failures.get(ref, 0) + 1
            delay = RETRY_BACKOFF.delay(failures)
            if isinstance(e, LeftoverError):
                # Expected right after a job is deleted and created again: no traceback.
                log.warning("CollectJob %s: %s; retrying in %.1fs", ref, e, delay)
            elif isinstance(e, TimeoutError):
                metrics.RECONCILE_ERRORS.inc()
                log.error(
                    "reconciling CollectJob %s took longer than %.0fs: cancelled; "
                    "retrying in %.1fs",
                    ref,
                    self._deadline,
                    delay,
                )
            else:
                metrics.RECONCILE_ERRORS.inc()
                log.exception("reconciling CollectJob %s failed; retrying in %.1fs", ref, delay)
            self._schedule(ref, delay)
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
            self._last_done[ref] = self._progress = time.monotonic()

    def _schedule(self, ref: JobRef, delay: float) -> None:
        """Look at the job again after `delay` seconds, unless an earlier look is due."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(ref)
        if timer is not None and not timer.cancelled():
            if timer.when() <= when:
                return
            timer.cancel()

        def fire() -> None:
            self._timers.pop(ref, None)
            self.enqueue(ref)

        self._timers[ref] = loop.call_at(when, fire)

    async def _guarded(self, job: CollectJob) -> bool:
        """False, with the job held and its status saying why, while the admission policy
        is missing (see guard). Finished jobs are never held."""
        if self._admission is None or (job.status.phase and job.status.phase.final):
            return True
        if await self._admission.installed():
            return True
        status = guard.held(job.status, job.generation, datetime.now(UTC))
        if status.to_dict() != job.status.to_dict():
            await self._patch_status(job, status)
        self._schedule(job.ref, guard.RETRY_AFTER)
        return False

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        """A blocking API call in the reconciler's own threads (bounded by the pool)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args))

    def _read_job(self, ref: JobRef) -> CollectJob | None:
        """The job from the watch cache, or as this operator's last status write left it
        while the cache has not streamed that write yet. None when it is gone or going."""
        body = self._cache.job(ref)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        memory = self._memory.get(meta["uid"])
        if memory is not None and memory.written is not None:
            if meta.get("resourceVersion") in memory.superseded:
                body = memory.written
            else:  # the cache has caught up (or moved on)
                memory.written = None
                memory.superseded.clear()
        return CollectJob.from_body(body)

    async def flush_events(self) -> None:
        """Post the events recorded so far, now (tests)."""
        await self._events.flush()

    async def _post_event(self, event: Event) -> None:
        await self._run(self._kube.post_event, event)

    async def _patch_status(self, job: CollectJob, status: JobStatus) -> bool:
        """Write `status` if the job is still as it was read; False (and a look again soon)
        when it changed meanwhile, or is gone."""
        version = job.resource_version
        patched = await self._run(self._kube.patch_job_status, job.ref, status.to_dict(), version)
        if patched is None:
            self._schedule(job.ref, STALE_RETRY)
            return False
        memory = self._memory.setdefault(job.uid, _JobMemory())
        memory.superseded.add(version)
        memory.written = patched
        memory.last_status_patch = time.monotonic()
        return True

    async def _reconcile(self, ref: JobRef) -> None:
        job = self._read_job(ref)
        if job is None:
            return
        if not await self._guarded(job):
            return
        memory = self._memory.setdefault(job.uid, _JobMemory())
        children = self._observe(job)
        world = self._world(job, memory, children, self._cache.worker_pods(ref))
        decision = decide(job.spec, job.generation, job.status, world)
        # From its first run on a job keeps all its children; one created suspended has none.
        wanted = decision.replicas > 0 or decision.status.start_time is not None
        # The API is asked for a Deployment the cache lacks while the simple children are
        # written: one round trip for both, on the path from a resume to the worker.
        taken, observed = await asyncio.gather(
            self._sync_children(job, create=wanted),
            self._look_up_deployment(job, children, wanted),
        )
        if taken or observed is not children:
            children = replace(observed, taken=[*observed.taken, *taken])
            world = replace(
                world,
                deployment_scaled_down=self._scaled_down(job, children),
                name_taken="; ".join(children.taken),
            )
            decision = decide(job.spec, job.generation, job.status, world)
        # The worker Deployment and the job's status are independent writes of one decision:
        # sent at once, a pass waits for one round trip instead of two. Both end before the
        # pass does (a failure is raised only then), so no write outlives its pass.
        writes = [self._apply_status(job, memory, decision, world)]
        if not children.deployment_foreign:
            writes.append(
                self._apply_workload(job, memory, decision, children.deployment, world, wanted)
            )
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        if decision.requeue_after is not None:
            self._schedule(ref, decision.requeue_after)

    def _observe(self, job: CollectJob) -> _Children:
        """The checkpoint ConfigMap (only if ours: a namesake's is never read) and the worker
        Deployment, from the cache."""
        configmap = self._cache.get("ConfigMap", job.ref, checkpoint_configmap_name(job.name))
        if configmap is not None and not _ours(configmap, job):
            configmap = None
        deployment = self._cache.get("Deployment", job.ref, worker_name(job.name))
        return _with_deployment(configmap, deployment, job)

    async def _look_up_deployment(
        self, job: CollectJob, children: _Children, wanted: bool
    ) -> _Children:
        """`children` with the Deployment as the API has it, when the cache has none and
        the job wants one: it may have been created a moment ago (not streamed yet), or be
        someone's unlabelled one. A job that does not want a Deployment never needs it."""
        if not wanted or children.deployment is not None or children.deployment_foreign:
            return children
        name = worker_name(job.name)
        deployment = await self._run(self._kube.get, "Deployment", job.namespace, name)
        if deployment is None:
            return children
        return _with_deployment(children.configmap, deployment, job)

    async def _sync_children(self, job: CollectJob, create: bool) -> list[str]:
        """Repair the checkpoint ConfigMap, ServiceAccount, Role and RoleBinding that exist,
        and create the missing ones when `create`. Returns what holds a name without being
        ours."""
        wanted = [
            desired
            for desired in (
                manifests.checkpoint_configmap(job),
                manifests.service_account(job),
                manifests.role(job),
                manifests.role_binding(job),
            )
            if create or self._cache.get(desired["kind"], job.ref, desired["metadata"]["name"])
        ]
        # Independent objects: written at once, so a first run costs one round trip here.
        results = await asyncio.gather(
            *(self._sync(job, desired) for desired in wanted), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        failure = next((e for e in errors if not isinstance(e, NameTakenError)), None)
        if failure is not None:
            raise failure
        return [str(e) for e in errors]

    async def _sync(self, job: CollectJob, desired: Obj) -> Obj | None:
        """Level-triggered: the child as the cache has it, created when missing, applied
        when it differs from `desired`. None when it changed under us (its watch event
        brings the job back)."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        actual = self._cache.get(kind, job.ref, name)
        if actual is None:
            created = await self._run(self._kube.create, desired)
            if created is not None:
                return created
            actual = await self._run(self._kube.get, kind, job.namespace, name)
            if actual is None:
                self.enqueue(job.ref)  # created and deleted meanwhile: look again
                return None
        check_ownership(actual, job.uid, job.name)
        if not _differs(actual, desired):
            return actual
        log.info("CollectJob %s: repairing %s %s", job.ref, kind, name)
        return await self._run(self._kube.apply, desired, actual["metadata"]["resourceVersion"])

    def _world(
        self, job: CollectJob, memory: _JobMemory, children: _Children, pods: list[Obj]
    ) -> World:
        now = datetime.now(UTC)
        checkpoint, problem = _read_checkpoint(job, children.configmap)
        eta = None
        if checkpoint is not None and not checkpoint.done:
            at = parse_time(checkpoint.updated_at) or now
            memory.throughput.observe(at, checkpoint.offset)
            eta = memory.throughput.eta(checkpoint.offset, checkpoint.bytes_total)
        return World(
            now=now,
            pods=tuple(_pod_view(p) for p in pods),
            checkpoint=checkpoint,
            checkpoint_problem=problem,
            checkpoint_configmap=checkpoint_configmap_name(job.name),
            eta=eta,
            deployment_scaled_down=self._scaled_down(job, children),
            name_taken="; ".join(children.taken),
        )

    def _scaled_down(self, job: CollectJob, children: _Children) -> bool:
        return scaled_down(children.deployment, self._cache.replicasets(job.ref))

    async def _apply_workload(
        self,
        job: CollectJob,
        memory: _JobMemory,
        decision: Decision,
        actual: Obj | None,
        world: World,
        wanted: bool,
    ) -> None:
        image = job.spec.worker.image or self._image
        desired = manifests.worker_deployment(job, image, decision.replicas, self._url_allowlist)
        if actual is None:
            # Not wanted yet, or a name is not ours (never a worker beside such an object).
            if wanted and not world.name_taken:
                created = await self._run(self._kube.create, desired)
                if created is None:
                    self.enqueue(job.ref)  # created meanwhile by someone else: look again
                else:
                    memory.deployment_generation = created["metadata"]["generation"]
        else:
            generation = int(actual["metadata"].get("generation", 0))
            written = memory.deployment_generation
            if written is not None and generation < written:
                return  # the cache has not seen our last write yet; its event will come
            if manifests.deployment_drifted(actual, desired) or generation != written:
                applied = await self._run(
                    self._kube.apply, desired, actual["metadata"]["resourceVersion"]
                )
                if applied is not None:
                    memory.deployment_generation = applied["metadata"]["generation"]
        if decision.kill_pods:
            await asyncio.gather(
                *(self._run(self._kube.delete_pod_now, job.namespace, p.name) for p in world.pods)
            )

    async def _apply_status(
        self, job: CollectJob, memory: _JobMemory, decision: Decision, world: World
    ) -> None:
        current, desired = job.status, decision.status
        running = any(p.running and not p.terminating for p in world.pods)
        self._observe_latencies(job, memory, desired, observed_running=running)
        self._jobs_metrics.record(job.ref, desired)
        if current.to_dict() != desired.to_dict():
            elapsed = time.monotonic() - memory.last_status_patch
            if current.progress_only_change(desired) and elapsed < STATUS_INTERVAL:
                self._schedule(job.ref, STATUS_INTERVAL - elapsed)
            elif not await self._patch_status(job, desired):
                return  # decided on a past state: the next pass decides again
        if desired.phase != current.phase and desired.phase is not None:
            metrics.PHASE_TRANSITIONS.labels(phase=str(desired.phase)).inc()
            log.info("CollectJob %s: %s -> %s", job.ref, current.phase, desired.phase)
        for what in decision.events:
            self._events.record(Event(job.ref, job.uid, what, job.provenance))

    def _observe_latencies(
        self, job: CollectJob, memory: _JobMemory, desired: JobStatus, observed_running: bool
    ) -> None:
        """Suspend: spec seen -> Suspended. Resume: spec seen -> a worker pod running."""
        previous, phase = job.status.phase, desired.phase
        now = time.monotonic()
        if phase is Phase.SUSPENDING and memory.suspend_seen is None:
            memory.suspend_seen = now
        if phase is Phase.SUSPENDED and previous is not Phase.SUSPENDED:
            if memory.suspend_seen is not None:
                metrics.SUSPEND_LATENCY.observe(now - memory.suspend_seen)
            memory.suspend_seen = None
        if phase is Phase.RUNNING and previous in WAS_SUSPENDED:
            memory.resume_seen = now
        if memory.resume_seen is not None and observed_running:
            metrics.RESUME_LATENCY.observe(now - memory.resume_seen)
            memory.resume_seen = None


def _with_deployment(configmap: Obj | None, deployment: Obj | None, job: CollectJob) -> _Children:
    """The job's children with `deployment` checked: one that is not the job's is named in
    `taken` and never used."""
    if deployment is not None:
        try:
            check_ownership(deployment, job.uid, job.name)
        except NameTakenError as e:
            return _Children(configmap, None, deployment_foreign=True, taken=[str(e)])
    return _Children(configmap, deployment, deployment_foreign=False, taken=[])


def _read_checkpoint(job: CollectJob, configmap: Obj | None) -> tuple[Checkpoint | None, str]:
    text = ((configmap or {}).get("data") or {}).get(CHECKPOINT_KEY)
    if not text:
        return None, ""
    try:
        return Checkpoint.from_json(text), ""
    except CheckpointError as e:
        log.warning("CollectJob %s: checkpoint unreadable: %s", job.ref, e)
        return None, str(e)


def _ours(child: Obj, job: CollectJob) -> bool:
    try:
        check_ownership(child, job.uid, job.name)
    except (LeftoverError, NameTakenError):
        return False
    return True


def _differs(actual: Obj, desired: Obj) -> bool:
    """Whether a simple child lacks our labels or differs in a field we set (a Role's
    rules, a RoleBinding's subjects); fields we do not set (a ConfigMap's data) never
    count. Ownership is checked before, by check_ownership."""
    labels = actual["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return True
    fields = set(desired) - {"apiVersion", "kind", "metadata"}
    return any(actual.get(key) != desired[key] for key in fields)


def _pod_view(pod: Obj) -> PodView:
    status: dict[str, Any] = pod.get("status") or {}
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or ())
    return PodView(
        name=pod["metadata"]["name"],
        running=status.get("phase") == "Running",
        terminating=bool(pod["metadata"].get("deletionTimestamp")),
        restarts=restarts,
    )
