"""What the operator and the worker agree on: names, labels, env and the job config.

Both packages import this module, so the pod template the operator writes and the
environment the worker reads can never drift apart.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, model_validator
from pydantic.dataclasses import dataclass

from collectjob_api.models import (
    CAMEL_CASE,
    Name,
    Pruned,
    keys,
    one_of,
    parse,
    refuse,
    show,
    under,
)

GROUP = "collect.dev"
VERSION = "v1alpha1"
PLURAL = "collectjobs"
KIND = "CollectJob"

LABEL_JOB = f"{GROUP}/job"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_CLIENT = f"{GROUP}/client"
"""Provenance: which client (web app, pipeline, person) created a CollectJob."""
LABEL_REQUEST = f"{GROUP}/request"
"""Provenance: the request id that created a CollectJob, so one selector stops them all."""
PROVENANCE_LABELS = (LABEL_CLIENT, LABEL_REQUEST)
WORKER_COMPONENT = "worker"
MANAGED_BY = "collectjob-operator"

CHECKPOINT_KEY = "checkpoint.json"
WORKER_CONTAINER = "worker"
DEFAULT_METRICS_PORT = 9102
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
"""Upper bound on one chunk's bytes; the worker sizes chunks for promptness below it."""
DEFAULT_GRACE_SECONDS = 30
"""The pod's terminationGracePeriodSeconds unless the CollectJob sets one."""
MIN_CHUNK_BYTES = 1024 * 1024
"""The CRD's minimum chunkBytes: smaller chunks would commit the checkpoint too often."""
DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024
"""The longest record the worker reads unless the CollectJob's maxRecordBytes says otherwise."""
DEFAULT_RETRY_FOR_SECONDS = 300
"""How long the worker retries transient source or sink errors (spec.retry.timeoutSeconds)."""

ENV_JOB_NAME = "COLLECTJOB_NAME"
ENV_NAMESPACE = "COLLECTJOB_NAMESPACE"
ENV_POD_NAME = "COLLECTJOB_POD_NAME"
ENV_POD_IP = "COLLECTJOB_POD_IP"
ENV_CHECKPOINT_CONFIGMAP = "COLLECTJOB_CHECKPOINT_CONFIGMAP"
ENV_CONFIG = "COLLECTJOB_CONFIG"
ENV_GRACE_SECONDS = "COLLECTJOB_GRACE_SECONDS"
"""The pod's terminationGracePeriodSeconds, so the worker knows how long a stop may take."""
ENV_JOB_UID = "COLLECTJOB_UID"
"""The CollectJob's UID: part of a processor's idempotency key, unique across re-creations."""
ENV_URL_ALLOWLIST = "COLLECTJOB_URL_ALLOWLIST"
"""Hosts, addresses and CIDRs that really are internal and that sources and S3 endpoints may
reach (comma-separated); everything not globally routable is refused otherwise."""
ENV_SOURCE_URL = "COLLECTJOB_SOURCE_URL"
"""The source URL when the CollectJob gives it by spec.source.urlFrom.secretKeyRef: the pod
template names the Secret, never the URL, and the config's source.url is then empty."""
ENV_SINK_URL = "COLLECTJOB_SINK_URL"
"""The sink URL from spec.sink.urlFrom.secretKeyRef, as ENV_SOURCE_URL."""
ENV_MAX_RECORD_BYTES = "COLLECTJOB_MAX_RECORD_BYTES"
"""spec.maxRecordBytes: a longer record is a permanent error naming its line."""
ENV_RETRY_FOR_SECONDS = "COLLECTJOB_RETRY_FOR_SECONDS"
"""spec.retry.timeoutSeconds: how long transient source and sink errors are retried."""

EXIT_OK = 0
"""Done, or stopped by a signal with everything committed (or the in-flight chunk abandoned)."""
EXIT_FAILED = 1
"""An unexpected or transient failure that outlasted the retries; a restart may succeed."""
EXIT_PERMANENT_ERROR = 2
"""A permanent error, already recorded in the checkpoint's `error` field."""
EXIT_FENCED = 3
"""Another worker took over the checkpoint; this one stopped without committing."""


def checkpoint_configmap_name(job: str) -> str:
    return f"{job}-checkpoint"


def worker_name(job: str) -> str:
    """Name shared by the worker's Deployment, ServiceAccount, Role and RoleBinding."""
    return f"{job}-worker"


def worker_labels(job: str) -> dict[str, str]:
    return {
        LABEL_NAME: "collectjob",
        LABEL_COMPONENT: WORKER_COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB: job,
    }


@dataclass(frozen=True, config=CAMEL_CASE)
class SecretKeyRef(Pruned):
    name: Name
    key: Name


@dataclass(frozen=True, config=CAMEL_CASE)
class UrlFrom(Pruned):
    """`urlFrom`: a URL that carries a credential lives in a Secret; the pod template names
    the Secret and the worker reads the URL from ENV_SOURCE_URL or ENV_SINK_URL."""

    secret_key_ref: SecretKeyRef


class _OneUrl:
    """`url` or `url_from`, exactly one (the CRD's rule, for bodies built by hand)."""

    url: str
    url_from: UrlFrom | None

    @model_validator(mode="after")
    def _one_url(self) -> Any:
        if bool(self.url) == (self.url_from is not None):
            raise refuse("must have exactly one of a non-empty url and urlFrom")
        return self


@dataclass(frozen=True, config=CAMEL_CASE)
class SourceConfig(_OneUrl, Pruned):
    """`spec.source`, handed to the worker as it stands. `url` is empty when `url_from`
    names a Secret instead (the CRD requires exactly one)."""

    url: str = ""
    url_from: UrlFrom | None = None
    format: str = "csv"
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True


COMPRESSIONS = ("snappy", "zstd")
"""Parquet compression codecs a sink may ask for (`spec.sink.options.compression`)."""
DEFAULT_COMPRESSION = "snappy"


@dataclass(frozen=True, config=CAMEL_CASE)
class SinkOptions(Pruned):
    """`spec.sink.options`: how parts are encoded."""

    compression: Annotated[str, one_of(COMPRESSIONS)] = DEFAULT_COMPRESSION
    """Parquet parts only: snappy (fast, the default) or zstd (about 2.7x smaller)."""
    statistics: bool = True
    """Parquet parts only: min/max statistics per column chunk and page, which readers use to
    skip row groups a filter rules out. Off saves their cost (a tenth of the worker's CPU on
    the bench) for parts that are only ever read whole."""


@dataclass(frozen=True, config=CAMEL_CASE)
class SinkConfig(_OneUrl, Pruned):
    """`spec.sink`, handed to the worker as it stands; `url` empty as in SourceConfig."""

    url: str = ""
    url_from: UrlFrom | None = None
    format: str = "csv"
    options: SinkOptions = SinkOptions()


DEFAULT_BACKOFF_LIMIT = 3
DEFAULT_PROCESSOR_STATE_BYTES = 256 * 1024 * 1024
"""Bytes of processor state a job may keep beside its sink (spec.process.stateLimitBytes)."""


@dataclass(frozen=True, config=CAMEL_CASE)
class ProcessConfig(Pruned):
    """`spec.process`: an installed processor, by its entry-point name (never an import path),
    and its options as plain data."""

    name: Name
    options: dict[str, Any] = Field(default_factory=dict)
    state_limit_bytes: int = DEFAULT_PROCESSOR_STATE_BYTES


@dataclass(frozen=True)
class WorkerConfig:
    """The part of a CollectJob's spec the worker needs, handed over as one env var."""

    source: SourceConfig
    sink: SinkConfig
    transform: dict[str, Any] | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    metrics_port: int = DEFAULT_METRICS_PORT
    process: ProcessConfig | None = None
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    """Tries of a failing processor call beyond the first, before the job fails."""
    throttle_bytes_per_second: int = 0
    """spec.throttle.bytesPerSecond; 0 means unthrottled."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        return parse(cls, json.loads(text), ValueError, under(ENV_CONFIG))


def _json_object(value: Any) -> Any:
    """The config arrives as JSON text; a parse error names the position, never the text
    (it holds the source and sink URLs)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise refuse("is not valid JSON: {reason}", reason=f"{e.msg} at position {e.pos}") from None


def _grace_seconds(value: Any) -> float:
    text = str(value) if value != "" else str(DEFAULT_GRACE_SECONDS)
    try:
        grace = float(text)
    except ValueError:
        grace = math.nan
    if not (math.isfinite(grace) and grace >= 0):
        raise refuse(
            "must be a number of seconds >= 0 (the pod's terminationGracePeriodSeconds), got {got}",
            got=show(text),
        )
    return grace


@dataclass(frozen=True, config=ConfigDict(populate_by_name=True))
class WorkerIdentity:
    """Who this worker is, read from the env the operator's pod template sets; each field's
    alias is its environment variable."""

    job: Annotated[Name, Field(alias=ENV_JOB_NAME)]
    namespace: Annotated[Name, Field(alias=ENV_NAMESPACE)]
    pod: Annotated[Name, Field(alias=ENV_POD_NAME)]
    configmap: Annotated[Name, Field(alias=ENV_CHECKPOINT_CONFIGMAP)]
    config: Annotated[WorkerConfig, Field(alias=ENV_CONFIG), BeforeValidator(_json_object)]
    pod_ip: Annotated[str, Field(alias=ENV_POD_IP)] = ""
    job_uid: Annotated[str, Field(alias=ENV_JOB_UID)] = ""
    grace_seconds: Annotated[
        float, Field(alias=ENV_GRACE_SECONDS), PlainValidator(_grace_seconds)
    ] = DEFAULT_GRACE_SECONDS
    """How long a stop may take before the kubelet kills the pod (ENV_GRACE_SECONDS)."""
    max_record_bytes: Annotated[int, Field(alias=ENV_MAX_RECORD_BYTES, gt=0)] = (
        DEFAULT_MAX_RECORD_BYTES
    )
    retry_for_seconds: Annotated[int, Field(alias=ENV_RETRY_FOR_SECONDS, gt=0)] = (
        DEFAULT_RETRY_FOR_SECONDS
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerIdentity:
        ours = {k: v for k, v in env.items() if k in keys(cls)}
        try:
            identity = parse(cls, ours, ValueError, lambda path: path or "the environment")
        except ValueError as e:
            raise ValueError(
                f"worker environment is incomplete or wrong: {e} "
                "(these variables come from the operator's pod template)"
            ) from None
        return replace(identity, config=_with_secret_urls(identity.config, env))


def _with_secret_urls(config: WorkerConfig, env: Mapping[str, str]) -> WorkerConfig:
    """Fill in a URL the config leaves empty from its env var (urlFrom.secretKeyRef).

    The error names the variable, never a value: the value is a credential.
    """
    source_url = config.source.url or env.get(ENV_SOURCE_URL, "").strip()
    sink_url = config.sink.url or env.get(ENV_SINK_URL, "").strip()
    for url, var, part in (
        (source_url, ENV_SOURCE_URL, "source"),
        (sink_url, ENV_SINK_URL, "sink"),
    ):
        if not url:
            raise ValueError(
                f"the {part} URL is missing: spec.{part}.url is empty and {var} (from "
                f"spec.{part}.urlFrom.secretKeyRef) is not set or empty"
            )
    return replace(
        config,
        source=replace(config.source, url=source_url, url_from=None),
        sink=replace(config.sink, url=sink_url, url_from=None),
    )
