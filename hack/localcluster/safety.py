"""The one loopback check every client of the local cluster goes through.

A URL's host is loopback only if it is `localhost` or a literal loopback address, parsed
by `ipaddress`: `https://127.attacker.example` is a DNS name that merely starts with 127.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(server: str) -> None:
    """Refuse any API server that is not on this machine's loopback."""
    try:
        host = urlparse(server).hostname or ""
    except ValueError:
        host = ""
    if not is_loopback_host(host):
        raise RuntimeError(f"refusing to use API server {server!r}: it is not on loopback")
