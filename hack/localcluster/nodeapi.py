"""Every Kubernetes API call the node agent makes, with 404 and 409 handled here, once.

The agent is configured only from the kubeconfig it is given (never the default loading) and
reads objects as plain JSON, the form `podspec.Pod.parse` reads. Every request has a timeout,
so a restarting API server shows up as an exception the caller retries, never as a hang.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client import ApiException
from kubernetes.watch.watch import iter_resp_lines

from collectjob_api.rfc3339 import format_time
from localcluster.nodeobject import lease_manifest, micro_time
from localcluster.podidentity import ClusterEndpoint, PodToken
from localcluster.podspec import Pod
from localcluster.safety import require_loopback

log = logging.getLogger(__name__)

TIMEOUT = (5, 20)
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
COMPONENT = "local-node-agent"
LEASE_NAMESPACE = "kube-node-lease"


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def describe(error: Exception) -> str:
    """One log line: API errors by status and reason (not their headers), others by message."""
    if not isinstance(error, ApiException):
        return f"{type(error).__name__}: {error}"
    try:
        message = json.loads(error.body or "{}").get("message", "")
    except ValueError:
        message = ""
    return f"API error {error.status} {error.reason}" + (f": {message}" if message else "")


def _absent(error: ApiException) -> bool:
    """404, or 409 on a uid precondition: the object we meant is gone."""
    return error.status in (404, 409)


class NodeApi:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.leases = client.CoordinationV1Api(api_client)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> NodeApi:
        """A client for a loopback API server whose certificate the kubeconfig's CA signs."""
        api_client = config.new_client_from_config(config_file=str(path))
        settings = api_client.configuration
        require_loopback(settings.host)
        if not settings.verify_ssl or not settings.ssl_ca_cert:
            raise ValueError(
                f"kubeconfig {path} names no certificate authority for {settings.host}: "
                "the node never talks to an API server it cannot verify"
            )
        return cls(api_client)

    def endpoint(self) -> ClusterEndpoint:
        settings = self.api_client.configuration
        return ClusterEndpoint(settings.host, Path(settings.ssl_ca_cert).read_bytes())

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        response = call(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
        return json.loads(response.data)

    def _read(self, call: Callable[..., Any], *args: Any) -> Any | None:
        try:
            return self._json(call, *args)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    # The node and its heartbeat.

    def server_version(self) -> str:
        return str(self._json(client.VersionApi(self.api_client).get_code)["gitVersion"])

    def ensure_node(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Node, or update the labels of the existing one; returns it."""
        name = manifest["metadata"]["name"]
        try:
            created = self._json(self.core.create_node, client.V1Node.from_dict(dict(manifest)))
            log.info("registered node %s", name)
            return dict(created)
        except ApiException as e:
            if e.status != 409:
                raise
        patch = {"metadata": {"labels": manifest["metadata"]["labels"]}}
        return dict(self._json(self.core.patch_node, name, patch, _content_type=MERGE))

    def set_taints(self, name: str, taints: list[dict[str, Any]]) -> None:
        self._json(self.core.patch_node, name, {"spec": {"taints": taints}}, _content_type=MERGE)

    def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> None:
        self._json(self.core.patch_node_status, name, patch, _content_type=STRATEGIC)

    def renew_lease(self, name: str, node_uid: str) -> None:
        now = datetime.now(UTC)
        patch = {"spec": {"holderIdentity": name, "renewTime": micro_time(now)}}
        try:
            self._json(
                self.leases.patch_namespaced_lease,
                name,
                LEASE_NAMESPACE,
                patch,
                _content_type=MERGE,
            )
        except ApiException as e:
            if e.status != 404:
                raise
            lease = client.V1Lease.from_dict(lease_manifest(name, node_uid, now))
            self._json(self.leases.create_namespaced_lease, LEASE_NAMESPACE, lease)

    # Pods bound to the node.

    def list_pods(self, node: str) -> tuple[list[dict[str, Any]], str]:
        listing = self._json(
            self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}"
        )
        return listing["items"], listing["metadata"]["resourceVersion"]

    def watch_pods(
        self, node: str, resource_version: str, seconds: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events until the server ends the watch; WatchExpired on 410."""
        try:
            response: Any = self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}",
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                _preload_content=False,
                _request_timeout=(TIMEOUT[0], seconds + 30),
            )
        except ApiException as e:
            if e.status == 410:
                raise WatchExpired() from e
            raise
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                yield kind, obj
        finally:
            response.close()
            response.release_conn()

    def patch_pod_status(self, pod: Pod, patch: Mapping[str, Any]) -> bool:
        """Patch the status of this very pod (its uid is a precondition); False if it is gone."""
        body = {"metadata": {"uid": pod.uid}, **patch}
        try:
            self._json(
                self.core.patch_namespaced_pod_status,
                pod.name,
                pod.namespace,
                body,
                _content_type=STRATEGIC,
            )
        except ApiException as e:
            if _absent(e):
                return False
            raise
        return True

    def finish_deletion(self, pod: Pod) -> None:
        """What a kubelet does once the containers are gone: delete with grace period 0."""
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.uid)
        )
        try:
            self._json(self.core.delete_namespaced_pod, pod.name, pod.namespace, body=options)
        except ApiException as e:
            if not _absent(e):
                raise

    # What a pod's containers need: identity, ConfigMaps, Secrets and claimed volumes.

    def account_automount(self, namespace: str, name: str) -> bool | None:
        account = self._read(self.core.read_namespaced_service_account, name, namespace)
        if account is None:
            raise LookupError(f'serviceaccount "{name}" not found in namespace {namespace}')
        automount = account.get("automountServiceAccountToken")
        return None if automount is None else bool(automount)

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        found = self._read(self.core.read_namespace, namespace)
        if found is None:
            raise LookupError(f'namespace "{namespace}" not found')
        return dict(found["metadata"].get("labels") or {})

    def request_token(self, pod: Pod, seconds: int, audience: str = "") -> PodToken:
        """A token for the pod's ServiceAccount, bound to the pod (it dies with it)."""
        request = client.AuthenticationV1TokenRequest.from_dict(
            {
                "spec": {
                    "audiences": [audience] if audience else [],
                    "expirationSeconds": seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod.name,
                        "uid": pod.uid,
                    },
                }
            }
        )
        issued = self._json(
            self.core.create_namespaced_service_account_token,
            pod.service_account,
            pod.namespace,
            request,
        )
        status = issued["status"]
        return PodToken(status["token"], datetime.fromisoformat(status["expirationTimestamp"]))

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        found = self._read(self.core.read_namespaced_config_map, name, namespace)
        return None if found is None else dict(found.get("data") or {})

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        found = self._read(self.core.read_namespaced_secret, name, namespace)
        if found is None:
            return None
        return {
            key: base64.b64decode(value).decode(errors="replace")
            for key, value in (found.get("data") or {}).items()
        }

    def persistent_volume_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._read(self.core.read_namespaced_persistent_volume_claim, name, namespace)
        return None if found is None else dict(found)

    def persistent_volume(self, name: str) -> dict[str, Any] | None:
        found = self._read(self.core.read_persistent_volume, name)
        return None if found is None else dict(found)

    def event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        """Record an Event on the pod, as a kubelet does; best effort, never raises."""
        now = format_time(datetime.now(UTC))
        event = {
            "metadata": {"name": f"{pod.name}.{time.time_ns():x}", "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT, "host": pod.node_name},
            "reportingComponent": COMPONENT,
            "reportingInstance": pod.node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            body = client.CoreV1Event.from_dict(event)
            self._json(self.core.create_namespaced_event, pod.namespace, body)
        except Exception as e:  # an event is never worth failing a pod for
            log.debug("could not record event %s on pod %s: %s", reason, pod.key, e)
