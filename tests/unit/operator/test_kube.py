"""The API module's pure parts: credentials policy and the ownership patch after a 409."""

from __future__ import annotations

import pytest

from collectjob_operator import kube
from collectjob_operator.kube import CredentialsError, client_configuration


def test_credentials_never_come_from_the_home_kubeconfig(monkeypatch, tmp_path):
    home_config = tmp_path / ".kube" / "config"
    home_config.parent.mkdir()
    home_config.write_text("this file must not be read\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CredentialsError, match="KUBECONFIG"):
        client_configuration()


def desired() -> dict:
    return {
        "kind": "Role",
        "metadata": {"labels": {"a": "1"}, "ownerReferences": [{"uid": "u1"}]},
        "rules": [{"verbs": ["get"]}],
    }


def test_nothing_to_patch_when_ours_already():
    actual = {"metadata": {"labels": {"a": "1", "b": "2"}, "ownerReferences": [{"uid": "u1"}]},
              "rules": [{"verbs": ["get"]}]}  # fmt: skip
    assert kube.ownership_patch(actual, desired(), ("rules",)) == {}


def test_patch_takes_ownership_and_restores_compared_fields_only():
    actual = {"metadata": {"ownerReferences": [{"uid": "old"}]}, "rules": [], "other": 1}
    patch = kube.ownership_patch(actual, desired(), ("rules",))
    assert patch == {
        "metadata": {"labels": {"a": "1"}, "ownerReferences": [{"uid": "u1"}]},
        "rules": [{"verbs": ["get"]}],
    }
