"""How the operator runs: kopf settings, credentials, and its own configuration.

The handlers are all `kopf.on.event`: kopf keeps no finalizer, progress or last-handled
state on the objects, so none of its persistence settings apply.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import kopf

from collectjob_api.credentials import client_configuration

DEFAULT_WORKER_IMAGE = "collectjob:dev"
ENV_WORKER_IMAGE = "COLLECTJOB_WORKER_IMAGE"

WATCH_SERVER_TIMEOUT = 300
"""The API server closes each watch after this long, so kopf reconnects regularly."""
WATCH_CLIENT_TIMEOUT = 330
"""A watch silent for longer than the server's own timeout is dead: kopf drops it."""
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class OperatorConfig:
    worker_image: str = DEFAULT_WORKER_IMAGE

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(worker_image=os.environ.get(ENV_WORKER_IMAGE) or DEFAULT_WORKER_IMAGE)


def configure(settings: kopf.OperatorSettings) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    # The operator posts its own, meaningful events; kopf's log-events only for problems.
    settings.posting.level = logging.WARNING
    # Serve only what the handlers name; no CRD/namespace scanning, so no RBAC for it.
    settings.scanning.disabled = True


def connection_info(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """kopf's credentials, from the same source as the API client's (never ~/.kube/config)."""
    cfg = client_configuration()
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    scheme, token = None, None
    if header:
        parts = header.split(" ", 1)
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        trust_env=settings.networking.trust_env,
    )
