"""The worker's side of the contract: what it reads from the pod's env, and the defaults."""

from __future__ import annotations

import pytest

from collectjob_api.contract import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_GRACE_SECONDS,
    ENV_CHECKPOINT_CONFIGMAP,
    ENV_CONFIG,
    ENV_GRACE_SECONDS,
    ENV_JOB_NAME,
    ENV_NAMESPACE,
    ENV_POD_NAME,
    SinkConfig,
    SourceConfig,
    WorkerConfig,
    WorkerIdentity,
)


def _env(**extra: str) -> dict[str, str]:
    config = WorkerConfig(SourceConfig("file:///in.csv"), SinkConfig("file:///out"))
    return {
        ENV_JOB_NAME: "orders",
        ENV_NAMESPACE: "team-a",
        ENV_POD_NAME: "orders-worker-1",
        ENV_CHECKPOINT_CONFIGMAP: "orders-checkpoint",
        ENV_CONFIG: config.to_json(),
        **extra,
    }


def test_grace_seconds_come_from_the_env() -> None:
    assert WorkerIdentity.from_env(_env(**{ENV_GRACE_SECONDS: "7"})).grace_seconds == 7.0


def test_grace_seconds_default_to_the_pods_default() -> None:
    assert WorkerIdentity.from_env(_env()).grace_seconds == DEFAULT_GRACE_SECONDS == 30


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_grace_seconds_that_are_not_a_duration_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=f"{ENV_GRACE_SECONDS} must be a number .* {value!r}"):
        WorkerIdentity.from_env(_env(**{ENV_GRACE_SECONDS: value}))


def test_chunk_bytes_default_is_the_shared_constant() -> None:
    config = WorkerConfig(SourceConfig("file:///in.csv"), SinkConfig("file:///out"))
    assert config.chunk_bytes == DEFAULT_CHUNK_BYTES == 64 * 1024 * 1024
    text = '{"source": {"url": "file:///in.csv"}, "sink": {"url": "file:///out"}}'
    assert WorkerConfig.from_json(text) == config
