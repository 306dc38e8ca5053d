"""A small typed client for CollectJobs: what the kubectl plugin, the web console and a
pipeline use to submit, inspect, suspend, resume, stop, terminate and wait for jobs.

Every call goes through one `ApiClient` built from an explicit kubeconfig and context
(never `~/.kube/config` by accident) or from a caller's bearer token, and every request
carries a timeout. Errors from the API server are raised as `CollectJobError` with the
job, the action and the server's own message, so a 403 from RBAC or a 422 from the CRD's
rules reaches the person unchanged.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict

from collectjob_api.checkpoint import Checkpoint, CheckpointError
from collectjob_api.contract import (
    CHECKPOINT_KEY,
    GROUP,
    KIND,
    LABEL_CLIENT,
    LABEL_JOB,
    LABEL_REQUEST,
    PLURAL,
    VERSION,
    WORKER_CONTAINER,
    checkpoint_configmap_name,
)
from collectjob_api.rfc3339 import parse_time

DEFAULT_TIMEOUT = 10.0
"""Seconds for one API request."""
FINAL_PHASES = frozenset({"Stopped", "Terminated", "Succeeded", "Failed"})


class Action(StrEnum):
    """The four controls, each one merge patch of the spec."""

    SUSPEND = "suspend"
    RESUME = "resume"
    STOP = "stop"
    TERMINATE = "terminate"

    @property
    def patch(self) -> dict[str, Any]:
        patches: dict[Action, dict[str, Any]] = {
            Action.SUSPEND: {"spec": {"suspend": True}},
            Action.RESUME: {"spec": {"suspend": False}},
            Action.STOP: {"spec": {"shutdown": "Stop"}},
            Action.TERMINATE: {"spec": {"shutdown": "Terminate"}},
        }
        return patches[self]

    @property
    def target(self) -> frozenset[str]:
        """The phases that mean the action took effect (`--wait` waits for one of them)."""
        return {
            Action.SUSPEND: frozenset({"Suspended"}),
            Action.RESUME: frozenset({"Running", "Succeeded"}),
            Action.STOP: frozenset({"Stopped"}),
            Action.TERMINATE: frozenset({"Terminated"}),
        }[self]


class CollectJobError(RuntimeError):
    """An API call about a CollectJob failed; `status` is the HTTP status (0 if none)."""

    def __init__(self, what: str, status: int, reason: str, message: str) -> None:
        self.status, self.reason, self.detail = status, reason, message
        text = f"{status} {reason}: {message}" if status else message
        super().__init__(f"{what}: {text}")

    @classmethod
    def from_api(cls, what: str, e: ApiException) -> CollectJobError:
        message = str(e.reason or "")
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(e.body or "{}").get("message") or message
        return cls(what, int(e.status or 0), str(e.reason or ""), message)


def _time(value: Any) -> datetime | None:
    """The kubernetes client hands some times over parsed, the custom objects as text."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_time(value)


class Condition(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class Job(BaseModel):
    """One CollectJob as a person reads it: phase, progress, rate, ETA and provenance."""

    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    uid: str = ""
    created: datetime | None = None
    labels: dict[str, str] = {}
    phase: str = ""
    suspend: bool = False
    shutdown: str = ""
    rows_processed: int = 0
    rows_rejected: int = 0
    bytes_processed: int = 0
    bytes_total: int = 0
    percent: float = 0.0
    rows_per_second: float | None = None
    eta: datetime | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    throttle_bytes_per_second: int = 0
    message: str = ""
    conditions: tuple[Condition, ...] = ()
    checkpoint_configmap: str = ""

    @property
    def client(self) -> str:
        return self.labels.get(LABEL_CLIENT, "")

    @property
    def request(self) -> str:
        return self.labels.get(LABEL_REQUEST, "")

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], now: datetime | None = None) -> Job:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        now = now or datetime.now(UTC)
        total, done = int(status.get("bytesTotal") or 0), int(status.get("bytesProcessed") or 0)
        phase = str(status.get("phase") or "")
        percent = 100.0 if phase == "Succeeded" else (100.0 * done / total if total else 0.0)
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            created=_time(meta.get("creationTimestamp")),
            labels=dict(meta.get("labels") or {}),
            phase=phase,
            suspend=bool(spec.get("suspend")),
            shutdown=str(spec.get("shutdown") or ""),
            rows_processed=int(status.get("rowsProcessed") or 0),
            rows_rejected=int(status.get("rowsRejected") or 0),
            bytes_processed=done,
            bytes_total=total,
            percent=min(100.0, percent),
            rows_per_second=_rate(status, now),
            eta=_time(status.get("estimatedCompletionTime")),
            start_time=_time(status.get("startTime")),
            completion_time=_time(status.get("completionTime")),
            throttle_bytes_per_second=int(status.get("throttleBytesPerSecond") or 0),
            message=str(status.get("message") or ""),
            conditions=tuple(
                Condition(
                    type=c["type"],
                    status=c.get("status", "Unknown"),
                    reason=c.get("reason") or "",
                    message=c.get("message") or "",
                    last_transition_time=_time(c.get("lastTransitionTime")),
                )
                for c in status.get("conditions") or ()
            ),
            checkpoint_configmap=str(status.get("checkpointConfigMap") or ""),
        )


def _rate(status: Mapping[str, Any], now: datetime) -> float | None:
    """Rows per active second since the start: suspended time does not count."""
    start = _time(status.get("startTime"))
    if start is None:
        return None
    end = _time(status.get("completionTime")) or now
    paused = float(status.get("suspendedSeconds") or 0)
    since = _time(status.get("suspendedSince"))
    if since is not None:
        paused += max(0.0, (end - since).total_seconds())
    active = (end - start).total_seconds() - paused
    rows = int(status.get("rowsProcessed") or 0)
    return rows / active if active > 0 and rows else None


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: str
    reason: str
    message: str
    time: datetime | None = None
    count: int = 1
    sequence: int = 0
    """The event's resourceVersion as a number: orders events stamped in the same second."""


class Outcome(BaseModel):
    """What one action did to one job."""

    model_config = ConfigDict(frozen=True)
    job: Job
    action: Action
    dry_run: bool = False
    reached: bool | None = None
    """With `wait`: whether the job reached the action's target phase (None: not waited)."""


class CollectJobClient:
    """CollectJobs through one API client; build it with `from_kubeconfig` or `with_token`."""

    def __init__(self, api: client.ApiClient, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api = api
        self.timeout = timeout
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    @classmethod
    def from_kubeconfig(
        cls, kubeconfig: str | None, context: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> CollectJobClient:
        """`kubeconfig` None means kubectl's own rule ($KUBECONFIG, then ~/.kube/config)."""
        return cls(config.new_client_from_config(config_file=kubeconfig, context=context), timeout)

    @classmethod
    def with_token(
        cls, base: client.Configuration, token: str, timeout: float = DEFAULT_TIMEOUT
    ) -> CollectJobClient:
        """A client acting as the holder of `token` on `base`'s server, with `base`'s CA
        only: none of `base`'s own credentials (client certificate, token) are carried over."""
        conf = client.Configuration()
        conf.host = base.host
        conf.ssl_ca_cert = base.ssl_ca_cert
        conf.verify_ssl = base.verify_ssl
        conf.api_key = {"authorization": token}
        conf.api_key_prefix = {"authorization": "Bearer"}
        return cls(client.ApiClient(conf), timeout)

    def close(self) -> None:
        self.api.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as e:
            raise CollectJobError.from_api(what, e) from e
        except Exception as e:  # urllib3 connection and timeout errors
            raise CollectJobError(what, 0, "", f"{type(e).__name__}: {e}") from e

    def submit(
        self,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        *,
        client_name: str = "",
        request: str = "",
        labels: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> Job:
        """Create a CollectJob; `client_name`/`request` become its provenance labels."""
        all_labels = dict(labels or {})
        all_labels.update({LABEL_CLIENT: client_name} if client_name else {})
        all_labels.update({LABEL_REQUEST: request} if request else {})
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": all_labels},
            "spec": dict(spec),
        }
        created = self._call(
            f"create CollectJob {namespace}/{name}",
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
            **({"dry_run": "All"} if dry_run else {}),
        )
        return Job.from_object(created)

    def get(self, namespace: str, name: str) -> Job:
        return Job.from_object(self._raw(namespace, name))

    def _raw(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(
            self._call(
                f"get CollectJob {namespace}/{name}",
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        )

    def list(self, namespace: str | None = None, selector: str = "") -> list[Job]:
        """Jobs in `namespace` (None: every namespace), filtered by a label selector."""
        where = namespace or "all namespaces"
        if namespace:
            raw = self._call(
                f"list CollectJobs in {where}",
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                label_selector=selector,
            )
        else:
            raw = self._call(
                f"list CollectJobs in {where}",
                self._custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                label_selector=selector,
            )
        now = datetime.now(UTC)
        jobs = [Job.from_object(item, now) for item in raw.get("items", ())]
        return sorted(jobs, key=lambda j: (j.namespace, j.name))

    def act(self, namespace: str, name: str, action: Action, dry_run: bool = False) -> Outcome:
        """Apply one control as a merge patch of the spec, as the caller's identity."""
        patched = self._call(
            f"{action} CollectJob {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            action.patch,
            **({"dry_run": "All"} if dry_run else {}),
        )
        return Outcome(job=Job.from_object(patched), action=action, dry_run=dry_run)

    def suspend(self, namespace: str, name: str, dry_run: bool = False) -> Outcome:
        return self.act(namespace, name, Action.SUSPEND, dry_run)

    def resume(self, namespace: str, name: str, dry_run: bool = False) -> Outcome:
        return self.act(namespace, name, Action.RESUME, dry_run)

    def stop(self, namespace: str, name: str, dry_run: bool = False) -> Outcome:
        return self.act(namespace, name, Action.STOP, dry_run)

    def terminate(self, namespace: str, name: str, dry_run: bool = False) -> Outcome:
        return self.act(namespace, name, Action.TERMINATE, dry_run)

    def watch(
        self, namespace: str | None, *, name: str = "", selector: str = "", timeout: float = 60
    ) -> Iterator[tuple[str, Job]]:
        """(event type, job) for every change until `timeout` seconds have passed; the
        first events are the current objects (the watch starts with a list)."""
        fields = f"metadata.name={name}" if name else None
        kwargs: dict[str, Any] = {
            "label_selector": selector,
            "timeout_seconds": max(1, int(timeout)),
            "_request_timeout": (self.timeout, timeout + self.timeout),
        }
        if fields:
            kwargs["field_selector"] = fields
        fn: Any = self._custom.list_cluster_custom_object
        args: tuple[str, ...] = (GROUP, VERSION)
        if namespace:
            fn, args = self._custom.list_namespaced_custom_object, (GROUP, VERSION, namespace)
        stream = watch.Watch()
        try:
            for event in stream.stream(fn, *args, PLURAL, **kwargs):
                obj = event["object"]
                if event["type"] == "ERROR" or not isinstance(obj, Mapping):
                    message = obj.get("message", "") if isinstance(obj, Mapping) else str(obj)
                    raise CollectJobError(f"watch CollectJobs in {namespace}", 0, "", message)
                yield event["type"], Job.from_object(obj)
        except ApiException as e:
            raise CollectJobError.from_api(f"watch CollectJobs in {namespace}", e) from e
        finally:
            stream.stop()

    def wait(self, namespace: str, name: str, phases: frozenset[str], timeout: float = 120) -> Job:
        """Block until the job is in one of `phases` or in a final phase; the job as seen
        then. Raises TimeoutError naming the job, the phases and the phase it is in."""
        job = self.wait_all([(namespace, name)], phases, timeout).get((namespace, name))
        if job is None:  # never listed: gone, or not visible to the caller
            job = self.get(namespace, name)
        if not _arrived(job, phases):
            raise TimeoutError(f"CollectJob {namespace}/{name} {missed(job, phases, timeout)}")
        return job

    def wait_all(
        self, refs: Iterable[tuple[str, str]], phases: frozenset[str], timeout: float = 120
    ) -> dict[tuple[str, str], Job]:
        """Block until every (namespace, name) is in one of `phases` or in a final phase, or
        `timeout` seconds have passed; each job as last seen. One watch per namespace, not
        one per job, so a bulk wait costs a few round trips however many jobs it covers.
        A job that did not get there is in the result in the phase it was left in; one that
        was never listed (deleted, or not the caller's to see) is not in it."""
        deadline = datetime.now(UTC).timestamp() + timeout
        pending = set(refs)
        seen: dict[tuple[str, str], Job] = {}
        while pending:
            left = deadline - datetime.now(UTC).timestamp()
            if left <= 0:
                break
            namespace = min(pending)[0]
            for kind, job in self.watch(namespace, timeout=min(left, 30)):  # starts with a list
                ref = (job.namespace, job.name)
                if kind == "DELETED":
                    pending.discard(ref)
                    seen.pop(ref, None)
                elif ref in pending or ref in seen:
                    seen[ref] = job
                    if _arrived(job, phases):
                        pending.discard(ref)
                if not any(ns == namespace for ns, _ in pending):
                    break
        return seen

    def events(self, namespace: str, name: str, limit: int = 20) -> builtins.list[Event]:
        """The job's most recent events, oldest first."""
        raw = self._call(
            f"list events of CollectJob {namespace}/{name}",
            self._core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}",
        )
        events = [
            Event(
                type=e.type or "",
                reason=e.reason or "",
                message=e.message or "",
                time=_time(e.last_timestamp or e.event_time or e.metadata.creation_timestamp),
                count=e.count or 1,
                sequence=int(e.metadata.resource_version or 0)
                if str(e.metadata.resource_version or "").isdigit()
                else 0,
            )
            for e in raw.items
        ]
        events.sort(key=lambda e: (e.time or datetime.min.replace(tzinfo=UTC), e.sequence))
        return events[-limit:]

    def worker_pods(self, namespace: str, name: str) -> builtins.list[str]:
        """Names of the job's worker pods, newest first."""
        raw = self._call(
            f"list the worker pods of {namespace}/{name}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=f"{LABEL_JOB}={name}",
        )
        pods = sorted(raw.items, key=lambda p: p.metadata.creation_timestamp, reverse=True)
        return [p.metadata.name for p in pods]

    def pod_log(self, namespace: str, pod: str) -> str:
        """The worker container's log through the API server (`pods/log`)."""
        return str(
            self._call(
                f"read the log of pod {namespace}/{pod}",
                self._core.read_namespaced_pod_log,
                pod,
                namespace,
                container=WORKER_CONTAINER,
            )
        )

    def checkpoint(self, namespace: str, name: str) -> Checkpoint | None:
        """The worker's last committed checkpoint; None before the first commit."""
        try:
            cm = self._core.read_namespaced_config_map(
                checkpoint_configmap_name(name), namespace, _request_timeout=self.timeout
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise CollectJobError.from_api(f"read the checkpoint of {namespace}/{name}", e) from e
        text = (cm.data or {}).get(CHECKPOINT_KEY)
        if not text:
            return None
        try:
            return Checkpoint.from_json(text)
        except CheckpointError as e:
            what = f"read the checkpoint of {namespace}/{name}"
            raise CollectJobError(what, 0, "", str(e)) from e


def _arrived(job: Job, phases: frozenset[str]) -> bool:
    return job.phase in phases or job.final


def missed(job: Job, phases: frozenset[str], timeout: float) -> str:
    """Why a wait for `phases` ended without them, as one clause after the job's name."""
    wanted = "/".join(sorted(phases))
    if job.final:
        return f"ended {job.phase}, not {wanted}"
    return f"did not reach {wanted} within {timeout:g}s: it is {job.phase or 'not yet reconciled'}"
