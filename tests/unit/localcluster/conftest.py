"""Pod manifests for the node agent's unit tests, as the API server would send them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from localcluster.podspec import Pod


@pytest.fixture
def pod_manifest() -> Callable[..., dict[str, Any]]:
    """A minimal bound pod; keyword arguments are merged into its spec."""

    def make(containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "web-1",
                "namespace": "shop",
                "uid": "0b6c3c1e-0000-4000-8000-000000000001",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"owner": "team-a"},
            },
            "spec": {
                "nodeName": "local-node",
                "serviceAccountName": "web",
                "containers": containers
                or [{"name": "main", "image": "ignored", "command": ["python"]}],
                **spec,
            },
        }

    return make


@pytest.fixture
def make_pod(pod_manifest: Callable[..., dict[str, Any]]) -> Callable[..., Pod]:
    return lambda *args, **kwargs: Pod.parse(pod_manifest(*args, **kwargs))
