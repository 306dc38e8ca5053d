"""The one credentials rule: KUBECONFIG if set, else the service account, never ~/.kube/config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from collectjob_api.credentials import CredentialsError, api_client, client_configuration


def _kubeconfig(path: Path, server: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose ~/.kube/config is valid, so reading it would make a call succeed."""
    home = tmp_path / "home"
    _kubeconfig(home / ".kube" / "config", "https://home.invalid:6443")
    monkeypatch.setenv("HOME", str(home))
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_without_kubeconfig_or_service_account_it_fails_and_never_reads_home(home) -> None:
    with pytest.raises(CredentialsError, match="KUBECONFIG is not set") as caught:
        client_configuration()
    assert "~/.kube/config is deliberately not read" in str(caught.value)


def test_kubeconfig_is_used_and_wins_over_the_service_account(home, tmp_path, monkeypatch):
    kubeconfig = _kubeconfig(tmp_path / "local.kubeconfig", "https://127.0.0.1:6443")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert client_configuration().host == "https://127.0.0.1:6443"
    made = api_client()
    assert isinstance(made, client.ApiClient)
    assert made.configuration.host == "https://127.0.0.1:6443"


def test_a_client_keeps_as_many_connections_as_its_caller_has_requests_in_flight(
    home, tmp_path, monkeypatch
):
    """The operator's 20 API threads on 2 CPUs: without it, 10 of them would open a TLS
    connection per request and discard it ("Connection pool is full")."""
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "k", "https://127.0.0.1:1")))
    default = api_client().rest_client.pool_manager.connection_pool_kw["maxsize"]
    made = api_client(connections=default + 10)
    assert made.rest_client.pool_manager.connection_pool_kw["maxsize"] == default + 10
    fewer = api_client(connections=1)  # never below the client's own default
    assert fewer.rest_client.pool_manager.connection_pool_kw["maxsize"] == default


@pytest.fixture
def service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pod env of an in-cluster service account, its files in `tmp_path/sa`."""
    from kubernetes.config import incluster_config

    directory = tmp_path / "sa"
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(directory / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(directory / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return directory


def test_the_service_account_is_used_without_kubeconfig(home, service_account) -> None:
    service_account.mkdir()
    (service_account / "token").write_text("sa-token")
    (service_account / "ca.crt").write_text("not checked until a connection is made")
    configuration = client_configuration()
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.get_api_key_with_prefix("BearerToken") == "bearer sa-token"


def test_service_account_without_a_token_fails_and_never_reads_home(home, service_account):
    with pytest.raises(CredentialsError, match=r"from the service account: .*token"):
        client_configuration()


def test_a_kubeconfig_that_does_not_exist_is_named(home, tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nope.kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(CredentialsError, match=f"KUBECONFIG names {missing}, which does not"):
        client_configuration()
