"""kopf handlers: each one only names the job it concerns and hands it to the reconciler.

A CollectJob's create, every spec change and the operator's own restart (the initial
listing) all lead to the same idempotent reconcile. Changes of the objects a job owns (its
Deployment, pods and checkpoint ConfigMap) lead there too, which is how progress, a pod that
finished terminating, or a Deployment edited by hand are noticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server

from collectjob_api import credentials
from collectjob_api.contract import (
    GROUP,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from collectjob_operator import metrics
from collectjob_operator import settings as operator_settings
from collectjob_operator.job import JobRef
from collectjob_operator.kube import Kube
from collectjob_operator.reconciler import Reconciler

CHILD_LABELS: dict[str, Any] = {
    LABEL_MANAGED_BY: MANAGED_BY,
    LABEL_JOB: kopf.PRESENT,
}


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings.configure(settings)
    config = operator_settings.OperatorConfig.from_env()
    kube = Kube(credentials.api_client())
    memo.reconciler = Reconciler(kube, config.worker_image, metrics.register_jobs_collector())
    if memo.get("metrics_port"):
        start_http_server(memo.metrics_port, addr=memo.listen_host)


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    return operator_settings.connection_info(settings)


@kopf.on.probe(id="jobs")
def tracked_jobs(memo: kopf.Memo, **_: Any) -> int:
    return int(memo.reconciler.tracked)


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
    if type == "DELETED":
        memo.reconciler.forget(ref)
        return
    version = (str(meta.get("uid", "")), int(meta.get("generation") or 0))
    await memo.reconciler.trigger_on_change(ref, version)


@kopf.on.event("", "v1", "configmaps", labels=CHILD_LABELS)
async def checkpoint_changed(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    await memo.reconciler.trigger_progress(_ref(namespace, labels[LABEL_JOB]))


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
async def child_changed(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    await memo.reconciler.trigger(_ref(namespace, labels[LABEL_JOB]))


def _ref(namespace: str | None, name: str) -> JobRef:
    if namespace is None:
        raise kopf.PermanentError(f"{name} has no namespace; CollectJobs are namespaced")
    return JobRef(namespace, name)
