"""Pure builders for the objects one CollectJob owns.

Each returns the object as the API expects it, with the job as controlling owner, so a
`kubectl delete cjob` garbage-collects all of them. Names, labels and env come from the
contract module the worker reads, so the two sides cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from collectjob_api.contract import (
    ENV_CHECKPOINT_CONFIGMAP,
    ENV_CONFIG,
    ENV_GRACE_SECONDS,
    ENV_JOB_NAME,
    ENV_JOB_UID,
    ENV_MAX_RECORD_BYTES,
    ENV_NAMESPACE,
    ENV_POD_IP,
    ENV_POD_NAME,
    ENV_RETRY_FOR_SECONDS,
    ENV_SINK_URL,
    ENV_SOURCE_URL,
    ENV_URL_ALLOWLIST,
    GROUP,
    LABEL_COMPONENT,
    LABEL_JOB,
    WORKER_COMPONENT,
    WORKER_CONTAINER,
    UrlFrom,
    checkpoint_configmap_name,
    worker_labels,
    worker_name,
)
from collectjob_operator.job import CollectJob

WORKER_UID = 10001
WORKER_COMMAND = ("tini", "--", "collectjob-worker", "run")
"""tini is PID 1 of the worker's container: the kernel drops a signal to PID 1 that has no
handler, so a SIGTERM in the worker's first instants (before Python runs any of its code)
would be lost and a suspension ignored; tini forwards it, and a worker without handlers yet
just ends (nothing of a chunk is committed before they are in place)."""
TEMPLATE_HASH_ANNOTATION = f"{GROUP}/template-hash"
DEFAULT_WORKER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"memory": "2Gi"},
}
"""The worker's resources when the CollectJob gives none. The memory limit leaves room for
a 64 MiB chunk as pandas holds it and twice the default maxRecordBytes. A CollectJob that
gives `worker.resources: {}` gets none, so a LimitRange's defaults apply instead."""
Manifest = dict[str, Any]


def _metadata(job: CollectJob, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": worker_labels(job.name),
        "ownerReferences": [job.owner_reference()],
    }


def checkpoint_configmap(job: CollectJob) -> Manifest:
    """Created empty: the worker writes the first checkpoint; the operator never does."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, checkpoint_configmap_name(job.name)),
    }


def service_account(job: CollectJob) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(job, worker_name(job.name)),
    }


def role(job: CollectJob) -> Manifest:
    """The worker may read and write its own checkpoint ConfigMap, and nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(job, worker_name(job.name)),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [checkpoint_configmap_name(job.name)],
                "verbs": ["get", "update", "patch"],
            }
        ],
    }


def role_binding(job: CollectJob) -> Manifest:
    name = worker_name(job.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(job, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}],
    }


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def worker_env(job: CollectJob, url_allowlist: str = "") -> list[dict[str, Any]]:
    """The contract env first; the user's extra env (never COLLECTJOB_*, the CRD says) after.
    `url_allowlist` is the installation's (the operator's --url-allowlist), never a tenant's."""
    spec = job.spec
    allowlist = [{"name": ENV_URL_ALLOWLIST, "value": url_allowlist}] if url_allowlist else []
    return [
        {"name": ENV_JOB_NAME, "value": job.name},
        {"name": ENV_JOB_UID, "value": job.uid},
        _field_env(ENV_NAMESPACE, "metadata.namespace"),
        _field_env(ENV_POD_NAME, "metadata.name"),
        _field_env(ENV_POD_IP, "status.podIP"),
        {"name": ENV_CHECKPOINT_CONFIGMAP, "value": checkpoint_configmap_name(job.name)},
        {"name": ENV_CONFIG, "value": spec.worker_config().to_json()},
        # The worker fits its last chunk into the grace period the kubelet will give it.
        {"name": ENV_GRACE_SECONDS, "value": str(spec.worker.termination_grace_period_seconds)},
        {"name": ENV_MAX_RECORD_BYTES, "value": str(spec.max_record_bytes)},
        {"name": ENV_RETRY_FOR_SECONDS, "value": str(spec.retry.timeout_seconds)},
        *_secret_url_env(ENV_SOURCE_URL, spec.source.url_from),
        *_secret_url_env(ENV_SINK_URL, spec.sink.url_from),
        *allowlist,
        *(dict(e) for e in spec.worker.env),
    ]


def _secret_url_env(name: str, url_from: UrlFrom | None) -> list[dict[str, Any]]:
    """A URL given by urlFrom.secretKeyRef reaches the worker as a Secret reference: the
    Deployment names the Secret and never holds the URL itself."""
    if url_from is None:
        return []
    ref = url_from.secret_key_ref
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def worker_resources(job: CollectJob) -> dict[str, Any]:
    """The CollectJob's own resources, or the defaults when it gives none."""
    resources = job.spec.worker.resources
    if resources is None:
        return {kind: dict(values) for kind, values in DEFAULT_WORKER_RESOURCES.items()}
    return {kind: dict(values) for kind, values in resources.items()}


def restricted_container_security() -> dict[str, Any]:
    """What the `restricted` Pod Security Standard asks of every container."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_template(job: CollectJob, image: str, url_allowlist: str) -> dict[str, Any]:
    worker = job.spec.worker
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(WORKER_COMMAND),
        "env": worker_env(job, url_allowlist),
        "ports": [{"name": "metrics", "containerPort": worker.metrics_port, "protocol": "TCP"}],
        "resources": worker_resources(job),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *map(dict, worker.volume_mounts)],
        "securityContext": restricted_container_security(),
    }
    if worker.env_from:
        container["envFrom"] = [dict(e) for e in worker.env_from]
    spec: dict[str, Any] = {
        "serviceAccountName": worker_name(job.name),
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": worker.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *map(dict, worker.volumes)],
    }
    if worker.node_selector:
        spec["nodeSelector"] = dict(worker.node_selector)
    if worker.tolerations:
        spec["tolerations"] = [dict(t) for t in worker.tolerations]
    return {"metadata": {"labels": worker_labels(job.name)}, "spec": spec}


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def worker_deployment(
    job: CollectJob, image: str, replicas: int, url_allowlist: str = ""
) -> Manifest:
    """Recreate, so an old and a new worker never run side by side on one checkpoint."""
    template = _pod_template(job, image, url_allowlist)
    metadata = _metadata(job, worker_name(job.name))
    metadata["annotations"] = {TEMPLATE_HASH_ANNOTATION: template_hash(template)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": {LABEL_JOB: job.name, LABEL_COMPONENT: WORKER_COMPONENT}},
            "template": template,
        },
    }


def deployment_drifted(actual: Manifest, desired: Manifest) -> bool:
    """Whether the live Deployment differs from the desired one in what the operator sets
    (replica count, or a pod template built from another spec)."""
    annotations = actual.get("metadata", {}).get("annotations") or {}
    return (
        actual.get("spec", {}).get("replicas") != desired["spec"]["replicas"]
        or annotations.get(TEMPLATE_HASH_ANNOTATION)
        != desired["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    )
