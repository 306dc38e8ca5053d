"""Every Kubernetes API call the operator makes, and the one place 404 and 409 are handled.

Calls are synchronous (the official client); the reconciler runs them in threads. Objects
travel as plain JSON dicts in the API's own camelCase, exactly as the manifest builders
produce them, so nothing is converted twice.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from collectjob_api.contract import GROUP, KIND, PLURAL, VERSION
from collectjob_api.rfc3339 import now_text
from collectjob_operator.job import API_VERSION, JobRef

FIELD_MANAGER = "collectjob-operator"
Obj = dict[str, Any]


class LeftoverError(RuntimeError):
    """An object we would create still belongs to a deleted CollectJob of the same name.

    Raised rather than taking it over: a new job must never read an old job's checkpoint
    or reuse its worker. The garbage collector removes such objects soon, so the
    reconciler retries with backoff (and the object's deletion triggers it too).
    """


@dataclass(frozen=True)
class _Kind:
    api: str
    suffix: str


_KINDS = {
    "ConfigMap": _Kind("core", "namespaced_config_map"),
    "ServiceAccount": _Kind("core", "namespaced_service_account"),
    "Role": _Kind("rbac", "namespaced_role"),
    "RoleBinding": _Kind("rbac", "namespaced_role_binding"),
    "Deployment": _Kind("apps", "namespaced_deployment"),
}


NOT_FOUND = 404
CONFLICT = 409


def _call(call: Callable[[], Any], tolerated: int) -> Obj | None:
    """Run one API call; the parsed object, or None when it answered `tolerated`.

    The one place an expected status (404: gone, 409: exists or changed) stops being an
    error; every other status propagates to the reconciler, which retries with backoff.
    """
    try:
        response = call()
    except client.ApiException as e:
        if e.status == tolerated:
            return None
        raise
    data: Obj = json.loads(response.data) if response.data else {}
    return data


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._apis: dict[str, Any] = {
            "core": client.CoreV1Api(api_client),
            "apps": client.AppsV1Api(api_client),
            "rbac": client.RbacAuthorizationV1Api(api_client),
        }
        self._custom = client.CustomObjectsApi(api_client)
        self._instance = socket.gethostname()

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        spec = _KINDS[kind]
        return getattr(self._apis[spec.api], f"{verb}_{spec.suffix}")

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        read = self._method("read", kind)
        return _call(lambda: read(name, namespace, _preload_content=False), NOT_FOUND)

    def create(self, manifest: Obj) -> Obj | None:
        """Create the object; None when it already exists."""
        create, namespace = (
            self._method("create", manifest["kind"]),
            manifest["metadata"]["namespace"],
        )
        return _call(
            lambda: create(
                namespace, manifest, field_manager=FIELD_MANAGER, _preload_content=False
            ),
            CONFLICT,
        )

    def ensure(self, manifest: Obj, compare: tuple[str, ...] = ()) -> Obj:
        """Create the object; if it exists, patch it only when our labels, owner or the
        `compare` top-level fields differ. Never touches other fields (a ConfigMap's data,
        for one)."""
        created = self.create(manifest)
        if created is not None:
            return created
        kind, meta = manifest["kind"], manifest["metadata"]
        actual = self.get(kind, meta["namespace"], meta["name"])
        if actual is None:
            raise RuntimeError(f"{kind} {meta['namespace']}/{meta['name']} vanished after a 409")
        patch = ownership_patch(actual, manifest, compare)
        if not patch:
            return actual
        patch_method = self._method("patch", kind)
        patched = _call(
            lambda: patch_method(meta["name"], meta["namespace"], patch,
                                 field_manager=FIELD_MANAGER,
                                 _content_type="application/merge-patch+json",
                                 _preload_content=False),
            NOT_FOUND,
        )  # fmt: skip
        if patched is None:
            raise RuntimeError(f"{kind} {meta['namespace']}/{meta['name']} vanished while patched")
        return patched

    def replace(self, manifest: Obj, resource_version: str) -> Obj | None:
        """Replace the whole object; None on a conflict (it changed since it was read)."""
        meta = manifest["metadata"]
        body = {**manifest, "metadata": {**meta, "resourceVersion": resource_version}}
        replace = self._method("replace", manifest["kind"])
        return _call(
            lambda: replace(meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER,
                            _preload_content=False),
            CONFLICT,
        )  # fmt: skip

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[Obj]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = _call(
            lambda: self._apis["core"].list_namespaced_pod(
                namespace, label_selector=label_selector, _preload_content=False
            ),
            NOT_FOUND,
        )
        return list((pods or {}).get("items") or [])

    def delete_pod_now(self, namespace: str, name: str) -> None:
        """Delete without grace (Terminate); a pod already gone is fine."""
        _call(
            lambda: self._apis["core"].delete_namespaced_pod(
                name, namespace, grace_period_seconds=0, _preload_content=False
            ),
            NOT_FOUND,
        )

    def get_job(self, ref: JobRef) -> Obj | None:
        return _call(
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name, _preload_content=False
            ),
            NOT_FOUND,
        )

    def patch_job_status(self, ref: JobRef, status: Obj) -> bool:
        """Merge-patch the status subresource; False when the job is gone."""
        patched = _call(
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name, {"status": status},
                field_manager=FIELD_MANAGER, _preload_content=False,
            ),
            NOT_FOUND,
        )  # fmt: skip
        return patched is not None

    def post_event(self, ref: JobRef, uid: str, event_type: str, reason: str,
                   message: str) -> None:  # fmt: skip
        """A core/v1 Event about a CollectJob, as `kubectl describe` shows them."""
        now = now_text()
        body: Any = {
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": uid,
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        _call(
            lambda: self._apis["core"].create_namespaced_event(
                ref.namespace, body, _preload_content=False
            ),
            NOT_FOUND,
        )


def _controller_uid(obj: Obj) -> str | None:
    owners = obj.get("metadata", {}).get("ownerReferences") or ()
    return next((o.get("uid") for o in owners if o.get("controller")), None)


def refuse_leftover(actual: Obj, owner_uid: str) -> None:
    """Raise LeftoverError when `actual` is controlled by another owner than `owner_uid`.

    Objects with no controller are adopted; ours are fine. Another controller is a
    previous CollectJob of the same name whose children the garbage collector has not
    removed yet (or someone else's object): never ours to take.
    """
    uid = _controller_uid(actual)
    if uid is not None and uid != owner_uid:
        meta = actual.get("metadata", {})
        raise LeftoverError(
            f"waiting for the garbage collector to remove {actual.get('kind', 'object')} "
            f"{meta.get('namespace')}/{meta.get('name')} left by a previous CollectJob "
            f"with uid {uid} (this one is {owner_uid})"
        )


def ownership_patch(actual: Obj, desired: Obj, compare: tuple[str, ...]) -> Obj:
    """The merge patch that makes `actual` carry our labels, owner and `compare` fields.

    Raises LeftoverError if another owner controls `actual` (see refuse_leftover).
    """
    meta, want = actual.get("metadata", {}), desired["metadata"]
    ours = want.get("ownerReferences", [])
    controller = _controller_uid(desired)
    if controller is not None:
        refuse_leftover(actual, controller)
    patch: Obj = {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in want.get("labels", {}).items()):
        patch.setdefault("metadata", {})["labels"] = want["labels"]
    owners = list(meta.get("ownerReferences") or ())
    uids = {o.get("uid") for o in owners}
    missing = [o for o in ours if o["uid"] not in uids]
    if missing:
        patch.setdefault("metadata", {})["ownerReferences"] = owners + missing
    for key in compare:
        if actual.get(key) != desired.get(key):
            patch[key] = desired[key]
    return patch
