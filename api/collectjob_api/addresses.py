"""Whether a host is this machine's loopback: the one check the local cluster's clients and
the console's cookie policy share.

A host is loopback only if it is `localhost` or a literal loopback address, parsed by
`ipaddress`: `127.attacker.example` is a DNS name that merely starts with 127.
"""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
