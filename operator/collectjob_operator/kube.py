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
from collectjob_api.redact import safe_message
from collectjob_operator.cache import Obj
from collectjob_operator.events import Event
from collectjob_operator.job import API_VERSION, JobRef

FIELD_MANAGER = "collectjob-operator"
REQUEST_TIMEOUT = (5.0, 20.0)
"""(connect, read) seconds for every API call: a half-open connection fails the call, and
the reconcile that made it is retried with backoff, instead of hanging for good."""


class LeftoverError(RuntimeError):
    """An object we would create still belongs to a deleted CollectJob of the same name.

    Raised rather than taking it over: a new job must never read an old job's checkpoint
    or reuse its worker. The garbage collector removes such objects soon, so the
    reconciler retries with backoff (and the object's deletion triggers it too).
    """


class NameTakenError(RuntimeError):
    """An object with a child's name exists that this job did not create.

    It is never adopted, patched or deleted: the job fails with reason NameTaken instead.
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


def _call(call: Callable[[], Any], *tolerated: int) -> Obj | None:
    """Run one API call; the parsed object, or None when it answered one of `tolerated`.

    The one place an expected status (404: gone, 409: exists or changed) stops being an
    error; every other status propagates to the reconciler, which retries with backoff.
    """
    try:
        response = call()
    except client.ApiException as e:
        if e.status in tolerated:
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
        self._admission = client.AdmissionregistrationV1Api(api_client)
        self._instance = socket.gethostname()

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        spec = _KINDS[kind]
        return getattr(self._apis[spec.api], f"{verb}_{spec.suffix}")

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        read = self._method("read", kind)
        return _call(
            lambda: read(name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT),
            NOT_FOUND,
        )

    def create(self, manifest: Obj) -> Obj | None:
        """Create the object; None when one of that name already exists (whoever's)."""
        create, namespace = (
            self._method("create", manifest["kind"]),
            manifest["metadata"]["namespace"],
        )
        return _call(
            lambda: create(
                namespace,
                manifest,
                field_manager=FIELD_MANAGER,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            CONFLICT,
        )

    def apply(self, manifest: Obj, resource_version: str) -> Obj | None:
        """Server-side apply of an object this job owns; None when it changed or went away
        since `resource_version` was read.

        `force` takes back fields another manager changed (someone's `kubectl scale`),
        which is right only because the caller has checked that the object is ours; the
        resourceVersion precondition makes that check and this write one atomic step.
        """
        meta = manifest["metadata"]
        body = {**manifest, "metadata": {**meta, "resourceVersion": resource_version}}
        patch = self._method("patch", manifest["kind"])
        return _call(
            lambda: patch(
                meta["name"],
                meta["namespace"],
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            CONFLICT,
            NOT_FOUND,
        )

    def delete_pod_now(self, namespace: str, name: str) -> None:
        """Delete without grace (Terminate); a pod already gone is fine."""
        _call(
            lambda: self._apis["core"].delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            NOT_FOUND,
        )

    def patch_job_status(self, ref: JobRef, status: Obj, resource_version: str) -> Obj | None:
        """Merge-patch the status subresource of the job as it was at `resource_version`;
        the job as patched, or None when it is gone or changed since (the caller read a
        stale copy: it looks again, it never overwrites what it has not seen)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return _call(
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ref.namespace,
                PLURAL,
                ref.name,
                body,
                field_manager=FIELD_MANAGER,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            CONFLICT,
            NOT_FOUND,
        )

    def admission_policy_bound(self, name: str) -> bool:
        """Whether the ValidatingAdmissionPolicy `name` exists with a binding of the same
        name that enforces it (Deny)."""
        policy = _call(
            lambda: self._admission.read_validating_admission_policy(
                name, _request_timeout=REQUEST_TIMEOUT, _preload_content=False
            ),
            NOT_FOUND,
        )
        binding = _call(
            lambda: self._admission.read_validating_admission_policy_binding(
                name, _request_timeout=REQUEST_TIMEOUT, _preload_content=False
            ),
            NOT_FOUND,
        )
        if policy is None or binding is None:
            return False
        spec = binding.get("spec") or {}
        return spec.get("policyName") == name and "Deny" in (spec.get("validationActions") or ())

    def post_event(self, event: Event) -> None:
        """Post `event` (see collectjob_operator.events, which calls this off the reconcile
        path)."""
        ref = event.ref
        body: Any = {
            "metadata": {
                "generateName": f"{ref.name}.",
                "namespace": ref.namespace,
                "labels": dict(event.labels),
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": event.uid,
            },
            "type": str(event.what.type),
            "reason": event.what.reason,
            "message": safe_message(event.what.message),
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance,
            "firstTimestamp": event.time,
            "lastTimestamp": event.time,
            "count": 1,
        }
        _call(
            lambda: self._apis["core"].create_namespaced_event(
                ref.namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
            NOT_FOUND,
        )


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference marked as controller, if any."""
    owners = obj.get("metadata", {}).get("ownerReferences") or ()
    return next((o for o in owners if o.get("controller")), None)


def check_ownership(actual: Obj, owner_uid: str, owner_name: str) -> None:
    """Return when `actual` is controlled by the CollectJob `owner_uid`; raise otherwise.

    LeftoverError: it is controlled by a previous CollectJob of the same name that the
    garbage collector has not removed yet (transient). NameTakenError: anything else, an
    object with no controller included: never ours to take, patch or delete.
    """
    owner = controller_of(actual)
    if owner is not None and owner.get("uid") == owner_uid:
        return
    meta = actual.get("metadata", {})
    what = f"{actual.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"
    if owner is not None and owner.get("kind") == KIND and owner.get("name") == owner_name:
        raise LeftoverError(
            f"waiting for the garbage collector to remove {what} left by a previous "
            f"CollectJob with uid {owner.get('uid')} (this one is {owner_uid})"
        )
    holder = f"{owner.get('kind')} {owner.get('name')}" if owner else "no controller"
    raise NameTakenError(
        f"{what} already exists and was not created by this CollectJob ({holder}); "
        "it is left alone: delete or rename it, or give the job another name"
    )
