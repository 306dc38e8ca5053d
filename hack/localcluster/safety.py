"""The one loopback check every client of the local cluster goes through.

What counts as loopback is `collectjob_api.addresses.is_loopback_host`: `localhost` or a
literal loopback address, never a DNS name such as `127.attacker.example`.
"""

from __future__ import annotations

from urllib.parse import urlparse

from collectjob_api.addresses import is_loopback_host

__all__ = ["is_loopback_host", "require_loopback"]


def require_loopback(server: str) -> None:
    """Refuse any API server that is not on this machine's loopback."""
    try:
        host = urlparse(server).hostname or ""
    except ValueError:
        host = ""
    if not is_loopback_host(host):
        raise RuntimeError(f"refusing to use API server {server!r}: it is not on loopback")
