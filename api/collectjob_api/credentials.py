"""Where the worker and the operator get Kubernetes credentials: one rule for both.

1. KUBECONFIG, if set: an explicit choice wins over anything ambient, and it is what the
   local node agent hands its pods (a kubeconfig with the pod's service-account token).
   The file is passed to the client by name, never found by the client's own defaults.
2. Otherwise the in-cluster service account, if KUBERNETES_SERVICE_HOST is set.
3. Otherwise a CredentialsError.

~/.kube/config is never read: a process that silently picks up whichever cluster a
developer last used is how a test run ends up talking to production.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kubernetes import client, config

ENV_KUBECONFIG = "KUBECONFIG"
ENV_SERVICE_HOST = "KUBERNETES_SERVICE_HOST"


class CredentialsError(Exception):
    """Neither KUBECONFIG nor an in-cluster service account gives usable credentials."""


def client_configuration(env: Mapping[str, str] = os.environ) -> client.Configuration:
    """The API server's address and credentials by the rule above (for clients such as
    kopf that need the parts rather than an ApiClient)."""
    configuration = client.Configuration()
    kubeconfig = env.get(ENV_KUBECONFIG, "")
    try:
        if kubeconfig:
            _require_files(kubeconfig)
            config.load_kube_config(
                config_file=kubeconfig,
                client_configuration=configuration,
                persist_config=False,
            )
        elif env.get(ENV_SERVICE_HOST):
            config.load_incluster_config(client_configuration=configuration)
        else:
            raise CredentialsError(
                f"no Kubernetes credentials: {ENV_KUBECONFIG} is not set and "
                f"{ENV_SERVICE_HOST} is not set (not running in a pod with a service "
                "account); ~/.kube/config is deliberately not read"
            )
    except config.ConfigException as e:
        source = f"{ENV_KUBECONFIG}={kubeconfig}" if kubeconfig else "the service account"
        raise CredentialsError(f"unusable Kubernetes credentials from {source}: {e}") from e
    return configuration


def api_client(
    env: Mapping[str, str] = os.environ, *, connections: int | None = None
) -> client.ApiClient:
    """An API client with the credentials chosen by the rule above.

    `connections`: how many requests its caller keeps in flight at once. The client keeps
    5 connections per CPU; a request beyond them opens a connection of its own (a TLS
    handshake) and discards it after one use."""
    configuration = client_configuration(env)
    if connections is not None:
        configuration.connection_pool_maxsize = max(
            connections, configuration.connection_pool_maxsize
        )
    return client.ApiClient(configuration)


def _require_files(kubeconfig: str) -> None:
    """The client skips missing files in a KUBECONFIG list silently; name them instead."""
    missing = [path for path in kubeconfig.split(os.pathsep) if path and not os.path.isfile(path)]
    if missing:
        raise CredentialsError(
            f"{ENV_KUBECONFIG} names {', '.join(missing)}, which does not exist or is not a file"
        )
