"""Kubernetes API access for cluster mode: in-cluster credentials, or the file in KUBECONFIG.

The worker never falls back to ~/.kube/config: a worker that found no credentials of its own
must fail loudly rather than talk to whatever cluster the machine's user last used.
"""

from __future__ import annotations

import os
from typing import Any

from collectjob_worker.errors import WorkerError

_SERVICE_HOST = "KUBERNETES_SERVICE_HOST"
_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def core_v1_from_env() -> Any:
    from kubernetes import client, config

    if os.environ.get(_SERVICE_HOST) and os.path.exists(_TOKEN):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.CoreV1Api(client.ApiClient(configuration))
    kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if kubeconfig:
        return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    raise WorkerError(
        "no Kubernetes credentials: not running in a cluster (no service account token) and "
        "KUBECONFIG is not set; the worker does not read ~/.kube/config"
    )
