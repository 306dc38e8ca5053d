"""A pod's identity: whether it gets a token, and the kubeconfig that carries it."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from localcluster.podidentity import (
    ClusterEndpoint,
    PodToken,
    should_hand_token,
    write_kubeconfig,
)

ENDPOINT = ClusterEndpoint("https://127.0.0.1:6443", b"-----BEGIN CERTIFICATE-----\nx\n")


@pytest.mark.parametrize(
    ("pod", "account", "expected"),
    [
        (None, None, True),
        (None, False, False),
        (None, True, True),
        (False, True, False),
        (True, False, True),
    ],
)
def test_the_pod_setting_wins_over_the_account_setting(
    pod: bool | None, account: bool | None, expected: bool
) -> None:
    assert should_hand_token(pod, account) is expected


def test_the_kubeconfig_carries_server_ca_token_and_namespace(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, ENDPOINT, "tok.en", "shop")
    config = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ENDPOINT.ca_pem
    assert config["users"][0]["user"] == {"token": "tok.en"}
    context = config["contexts"][0]
    assert config["current-context"] == context["name"]
    assert context["context"]["namespace"] == "shop"


def test_the_kubeconfig_is_private_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("old")
    path.chmod(0o644)
    write_kubeconfig(path, ENDPOINT, "new-token", "shop")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "new-token" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["kubeconfig"]


def test_a_token_is_renewed_at_four_fifths_of_its_life() -> None:
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    token = PodToken("t", issued + timedelta(hours=10))
    assert token.refresh_due(issued) == issued + timedelta(hours=8)
