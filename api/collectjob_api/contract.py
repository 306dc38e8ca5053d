"""What the operator and the worker agree on: names, labels, env and the job config.

Both packages import this module, so the pod template the operator writes and the
environment the worker reads can never drift apart.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

GROUP = "collect.dev"
VERSION = "v1alpha1"
PLURAL = "collectjobs"
KIND = "CollectJob"

LABEL_JOB = f"{GROUP}/job"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
WORKER_COMPONENT = "worker"
MANAGED_BY = "collectjob-operator"

CHECKPOINT_KEY = "checkpoint.json"
WORKER_CONTAINER = "worker"
DEFAULT_METRICS_PORT = 9102
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
"""Upper bound on one chunk's bytes; the worker sizes chunks for promptness below it."""
DEFAULT_GRACE_SECONDS = 30
"""The pod's terminationGracePeriodSeconds unless the CollectJob sets one."""

ENV_JOB_NAME = "COLLECTJOB_NAME"
ENV_NAMESPACE = "COLLECTJOB_NAMESPACE"
ENV_POD_NAME = "COLLECTJOB_POD_NAME"
ENV_POD_IP = "COLLECTJOB_POD_IP"
ENV_CHECKPOINT_CONFIGMAP = "COLLECTJOB_CHECKPOINT_CONFIGMAP"
ENV_CONFIG = "COLLECTJOB_CONFIG"
ENV_GRACE_SECONDS = "COLLECTJOB_GRACE_SECONDS"
"""The pod's terminationGracePeriodSeconds, so the worker knows how long a stop may take."""

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


@dataclass(frozen=True)
class SourceConfig:
    url: str
    format: str = "csv"
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True


@dataclass(frozen=True)
class SinkConfig:
    url: str
    format: str = "csv"


@dataclass(frozen=True)
class WorkerConfig:
    """The part of a CollectJob's spec the worker needs, handed over as one env var."""

    source: SourceConfig
    sink: SinkConfig
    transform: dict[str, Any] | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    metrics_port: int = DEFAULT_METRICS_PORT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        raw = json.loads(text)
        return cls(
            source=SourceConfig(**raw["source"]),
            sink=SinkConfig(**raw["sink"]),
            transform=raw.get("transform"),
            chunk_bytes=int(raw.get("chunk_bytes", DEFAULT_CHUNK_BYTES)),
            metrics_port=int(raw.get("metrics_port", DEFAULT_METRICS_PORT)),
        )


@dataclass(frozen=True)
class WorkerIdentity:
    """Who this worker is, read from the env the operator's pod template sets."""

    job: str
    namespace: str
    pod: str
    configmap: str
    config: WorkerConfig
    pod_ip: str = ""
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    """How long a stop may take before the kubelet kills the pod (ENV_GRACE_SECONDS)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerIdentity:
        missing = [
            k
            for k in (
                ENV_JOB_NAME,
                ENV_NAMESPACE,
                ENV_POD_NAME,
                ENV_CHECKPOINT_CONFIGMAP,
                ENV_CONFIG,
            )
            if not env.get(k)
        ]
        if missing:
            raise ValueError(
                f"worker environment is incomplete: {', '.join(missing)} not set "
                "(these come from the operator's pod template)"
            )
        return cls(
            job=env[ENV_JOB_NAME],
            namespace=env[ENV_NAMESPACE],
            pod=env[ENV_POD_NAME],
            configmap=env[ENV_CHECKPOINT_CONFIGMAP],
            config=WorkerConfig.from_json(env[ENV_CONFIG]),
            pod_ip=env.get(ENV_POD_IP, ""),
            grace_seconds=_grace_seconds(env),
        )


def _grace_seconds(env: Mapping[str, str]) -> float:
    text = env.get(ENV_GRACE_SECONDS) or str(DEFAULT_GRACE_SECONDS)
    try:
        grace = float(text)
    except ValueError:
        grace = math.nan
    if not (math.isfinite(grace) and grace >= 0):
        raise ValueError(
            f"{ENV_GRACE_SECONDS} must be a number of seconds >= 0 (the pod's "
            f"terminationGracePeriodSeconds), got {text!r}"
        )
    return grace
