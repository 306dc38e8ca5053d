"""When a job's worker is gone: its Deployment asks for no pod and its controllers agree.

A suspend or stop is complete only once no worker pod can run: the pods are gone (the
reconciler checks the pod cache) and no controller is about to create one. These pure
predicates judge the second half from the Deployment and ReplicaSets as watched.
"""

from __future__ import annotations

from collections.abc import Iterable

from collectjob_operator.cache import Obj


def _asked_zero_and_seen(workload: Obj) -> bool:
    """A Deployment or ReplicaSet asks for zero pods and its controller has seen that spec."""
    meta, spec = workload["metadata"], workload.get("spec") or {}
    status = workload.get("status") or {}
    return spec.get("replicas") == 0 and int(status.get("observedGeneration", 0)) >= int(
        meta.get("generation", 0)
    )


def at_zero(workload: Obj) -> bool:
    """A Deployment or ReplicaSet asks for zero pods, its controller has seen that spec and
    counts no live pod (a terminating one is not counted: the pod cache still has it)."""
    return _asked_zero_and_seen(workload) and not (workload.get("status") or {}).get("replicas")


def scaled_down(deployment: Obj | None, replicasets: Iterable[Obj]) -> bool:
    """The worker Deployment asks for no pods, its controller has acted on that, and no pod
    is counted: by the Deployment's own status, or sooner by its ReplicaSets'.

    The ReplicaSet's status says the pod is gone one write before the Deployment's does. In
    a mass suspend that write waits in the deployment controller's client queue (20 writes/s
    by default, shared by every job) for seconds; see tests/bench/test_operator_scale.py.
    The ReplicaSets count only once the Deployment's controller has seen the spec at zero,
    so none of them can be scaled up again by an older spec.

    A Deployment that does not exist (the API said so: it is looked up when not cached)
    runs nothing either; a job created suspended gets one only when it first runs.
    """
    if deployment is None:
        return True
    if not _asked_zero_and_seen(deployment):
        return False
    if not (deployment.get("status") or {}).get("replicas"):
        return True
    uid = deployment["metadata"].get("uid")
    owned = [
        rs
        for rs in replicasets
        if any(
            ref.get("controller") and ref.get("uid") == uid
            for ref in rs["metadata"].get("ownerReferences") or ()
        )
    ]
    return bool(owned) and all(at_zero(rs) for rs in owned)
