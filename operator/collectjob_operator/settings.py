"""How the operator runs: kopf settings, credentials, and its own configuration.

The handlers are all `kopf.on.event`: kopf keeps no finalizer, progress or last-handled
state on the objects, so none of its persistence settings apply, and no essence of an
object is ever compared (`NoEssence`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import kopf

from collectjob_api.contract import ENV_URL_ALLOWLIST, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY
from collectjob_api.credentials import client_configuration
from collectjob_operator.cache import CHILD_KINDS

DEFAULT_WORKER_IMAGE = "collectjob:dev"
ENV_WORKER_IMAGE = "COLLECTJOB_WORKER_IMAGE"

WATCH_SERVER_TIMEOUT = 60
"""The API server closes each watch after this long, so kopf reconnects regularly (from
the last resourceVersion: no relisting)."""
WATCH_CLIENT_TIMEOUT = 90
"""A watch silent for longer than the server's own timeout is dead (a half-open
connection, a proxy that stopped forwarding): kopf drops it and watches again."""
CONNECT_TIMEOUT = 10
REQUEST_TIMEOUT = 30
"""kopf's own API calls (it patches nothing of ours, but lists and watches)."""
API_ERROR_BACKOFFS = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30)
"""kopf's retries of a failed list or watch, about 3 minutes in all: an API server or etcd
restart is ridden out without losing the indexes; a longer outage ends the process, and
its Deployment starts it again."""
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB}"
"""Sent with every list and watch of a child kind: the API server filters, so the
operator never receives other Pods, ConfigMaps or Deployments of the cluster."""


@dataclass(frozen=True)
class OperatorConfig:
    worker_image: str = DEFAULT_WORKER_IMAGE
    url_allowlist: str = ""
    """Internal hosts/CIDRs every worker may reach (ENV_URL_ALLOWLIST of the operator's own
    environment, set by the installation): handed to each worker, never taken from a job."""

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            worker_image=os.environ.get(ENV_WORKER_IMAGE) or DEFAULT_WORKER_IMAGE,
            url_allowlist=os.environ.get(ENV_URL_ALLOWLIST, ""),
        )


class NoEssence(kopf.DiffBaseStorage):
    """kopf's change detection, switched off at its cost: with only `kopf.on.event` handlers
    and indexes (handlers.py; a unit test keeps it so), kopf compares no object's essence,
    yet its default storage deep-copies every object of every watch event to build one.
    That was 12% of the operator's CPU samples in a mass suspend (py-spy on
    tests/bench/test_operator_scale.py). Building an empty essence changes no handler's
    input."""

    def build(self, *, body: Any, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.networking.error_backoffs = API_ERROR_BACKOFFS
    for child in CHILD_KINDS:
        settings.watching.label_selectors[child.group, child.version, child.plural] = CHILD_SELECTOR
    # The operator posts its own, meaningful events; kopf's log-events only for problems.
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = NoEssence()
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
