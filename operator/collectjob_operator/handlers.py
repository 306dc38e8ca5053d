"""kopf handlers: each one only names the job it concerns and hands it to the reconciler.

A CollectJob's create, every spec change and the operator's own restart (the initial
listing) all lead to the same idempotent reconcile. Changes of the objects a job owns (its
Deployment, pods, checkpoint ConfigMap, ServiceAccount, Role and RoleBinding) lead there
too, which is how progress, a pod that finished terminating, or a child deleted or edited
by hand are noticed; so does its worker ReplicaSet reaching zero. The same watches fill the
indexes the reconciler reads children from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server

from collectjob_api import credentials
from collectjob_api.contract import (
    GROUP,
    KIND,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from collectjob_operator import metrics
from collectjob_operator import settings as operator_settings
from collectjob_operator.cache import CHILD_KINDS, JOB_INDEX, ChildKind, WatchCache, index_entry
from collectjob_operator.guard import AdmissionGuard
from collectjob_operator.job import JobRef
from collectjob_operator.kube import Kube
from collectjob_operator.reconciler import DEFAULT_WORKERS, Priority, Reconciler, api_threads
from collectjob_operator.scale import at_zero

LIVENESS_STALL = 180.0
"""Seconds with work queued and no reconcile finished before /healthz turns red: three
times the reconcile deadline, so only a dead or blocked loop gets there."""

CHILD_LABELS: dict[str, Any] = {
    LABEL_MANAGED_BY: MANAGED_BY,
    LABEL_JOB: kopf.PRESENT,
}
"""Repeats settings.CHILD_SELECTOR client-side, for the rare event kopf lets through
(an object whose labels were just edited away)."""


def _register_child_index(child: ChildKind) -> None:
    """One kopf index per child kind, read by the reconciler through WatchCache."""

    def index(
        namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any
    ) -> dict[JobRef, Any]:
        return index_entry(child.kind, namespace, labels[LABEL_JOB], body)

    kopf.index(child.group, child.version, child.plural, id=child.kind, labels=CHILD_LABELS)(index)


for _child in CHILD_KINDS:
    _register_child_index(_child)


@kopf.index(GROUP, VERSION, PLURAL, id=JOB_INDEX)
def job_index(
    namespace: str | None, name: str, body: Mapping[str, Any], **_: Any
) -> dict[JobRef, Any]:
    """The jobs themselves, so a reconcile reads its job without a GET."""
    return index_entry(KIND, namespace, name, body)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **indices: Any) -> None:
    operator_settings.configure(settings)
    config = operator_settings.OperatorConfig.from_env()
    workers = memo.get("workers") or DEFAULT_WORKERS
    kube = Kube(credentials.api_client(connections=api_threads(workers)))
    guard = None if memo.get("allow_unguarded") else AdmissionGuard(kube.admission_policy_bound)
    kinds = [JOB_INDEX, *(child.kind for child in CHILD_KINDS)]
    cache = WatchCache({kind: indices[kind] for kind in kinds})
    memo.reconciler = Reconciler(
        kube,
        config.worker_image,
        metrics.register_jobs_collector(),
        cache,
        workers=workers,
        admission=guard,
        url_allowlist=config.url_allowlist,
    )
    memo.reconciler.start()
    if memo.get("metrics_port"):
        start_http_server(memo.metrics_port, addr=memo.listen_host)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.stop()


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    return operator_settings.connection_info(settings)


@kopf.on.probe(id="jobs")
def tracked_jobs(memo: kopf.Memo, **_: Any) -> int:
    return int(memo.reconciler.tracked)


@kopf.on.probe(id="reconcile-loop", errors=kopf.ErrorsMode.PERMANENT)
def reconcile_loop(memo: kopf.Memo, **_: Any) -> float:
    """/healthz turns red (500) when the loop had work but finished nothing for a while."""
    stalled = float(memo.reconciler.stalled_for())
    if stalled > LIVENESS_STALL:
        raise kopf.PermanentError(f"no reconcile has finished for {stalled:.0f}s")
    return stalled


@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_event(
    type: str | None, name: str, namespace: str | None, meta: Mapping[str, Any], memo: Any, **_: Any
) -> None:
    """Every event of a job, including the initial listing after an operator restart.

    kopf's create/update handlers compare the spec with the one last handled, so a spec that
    flips (suspend true, then false) while a reconcile runs looks unchanged to them and the
    flip is lost. The generation, bumped by every spec change, cannot miss one.
    """
    ref = _ref(namespace, name)
    uid = str(meta.get("uid", ""))
    if type == "DELETED":
        memo.reconciler.forget(ref, uid)
        return
    memo.reconciler.trigger_on_change(ref, (uid, int(meta.get("generation") or 0)))


@kopf.on.event("", "v1", "configmaps", labels=CHILD_LABELS)
async def checkpoint_changed(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    memo.reconciler.trigger_progress(_ref(namespace, labels[LABEL_JOB]))


def replicaset_at_zero(body: Mapping[str, Any], **_: Any) -> bool:
    """Only a worker ReplicaSet reaching zero can change a decision (a scale-down is
    complete: scale.py); its other events would only cost reconciles."""
    return at_zero(dict(body))


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
@kopf.on.event("apps", "v1", "replicasets", labels=CHILD_LABELS, when=replicaset_at_zero)
@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "serviceaccounts", labels=CHILD_LABELS)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=CHILD_LABELS)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=CHILD_LABELS)
async def child_changed(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    memo.reconciler.enqueue(_ref(namespace, labels[LABEL_JOB]), Priority.CHILD)


def _ref(namespace: str | None, name: str) -> JobRef:
    if namespace is None:
        raise kopf.PermanentError(f"{name} has no namespace; CollectJobs are namespaced")
    return JobRef(namespace, name)
