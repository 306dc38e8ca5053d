"""The typed models: errors name the field as the document spells it, and never echo a URL."""

from __future__ import annotations

import pytest

from collectjob_api.contract import ENV_CONFIG, WorkerIdentity
from collectjob_api.spec import CollectJobSpec, Shutdown, WorkerSpec

SOURCE = {"url": "s3://bucket/in.csv"}
SINK = {"url": "s3://bucket/out"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"sink": SINK}, "spec.source is required"),
        (
            {"source": {}, "sink": SINK},
            "spec.source must have exactly one of a non-empty url and urlFrom",
        ),
        (
            {"source": SOURCE, "sink": {"url": ""}},
            "spec.sink must have exactly one of a non-empty url and urlFrom",
        ),
        (
            {
                "source": {**SOURCE, "urlFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                "sink": SINK,
            },
            "spec.source must have exactly one of a non-empty url and urlFrom",
        ),
        ({"source": SOURCE, "sink": SINK, "chunkBytes": "lots"}, "spec.chunkBytes is invalid"),
        ({"source": SOURCE, "sink": SINK, "shutdown": "Halt"}, "spec.shutdown is invalid"),
        (
            {"source": SOURCE, "sink": SINK, "worker": {"metricsPort": "x"}},
            "spec.worker.metricsPort is invalid",
        ),
    ],
)
def test_spec_errors_name_the_field(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.")):
        CollectJobSpec.from_dict(spec)


def test_nulls_and_unknown_keys_in_a_spec_mean_left_out() -> None:
    spec = CollectJobSpec.from_dict(
        {"source": SOURCE, "sink": SINK, "worker": None, "shutdown": None, "someday": 1}
    )
    assert spec.worker == WorkerSpec() and spec.shutdown is Shutdown.NONE
    assert spec.worker.metrics_port == 9102 and spec.chunk_bytes == 64 * 1024 * 1024


def test_a_broken_worker_config_names_the_variable_but_not_the_urls() -> None:
    env = {
        "COLLECTJOB_NAME": "orders",
        "COLLECTJOB_NAMESPACE": "team-a",
        "COLLECTJOB_POD_NAME": "orders-worker-1",
        "COLLECTJOB_CHECKPOINT_CONFIGMAP": "orders-checkpoint",
        ENV_CONFIG: '{"source": {"url": "s3://secret-bucket/in.csv"}, "sink": ',
    }
    with pytest.raises(ValueError, match=f"{ENV_CONFIG} is not valid JSON") as caught:
        WorkerIdentity.from_env(env)
    assert "secret-bucket" not in str(caught.value)
