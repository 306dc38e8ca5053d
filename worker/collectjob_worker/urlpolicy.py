"""Which network addresses a job may make the worker connect to.

A tenant chooses the source URL and the S3 endpoint, and the worker runs inside the cluster,
so without a rule a CollectJob could read the cloud metadata service (169.254.169.254), the
API server or any internal service and have the answer written to its sink. The rule:

- Addresses that are not globally routable are refused: loopback, link-local (169.254/16,
  fe80::/10), private (RFC 1918, fc00::/7), shared address space (CGNAT, 100.64/10),
  unspecified, multicast, reserved, IPv4-mapped forms of all of these, and the cluster's own
  API service address (KUBERNETES_SERVICE_HOST, inside the service range).
- The check runs after DNS, on every address a name resolves to (one refused address
  refuses the name), and again on every connection: every redirect and every retry.
- The connection then goes to the address that was checked, not to a second lookup of the
  name, so DNS rebinding (public on the check, internal on the connect) has no window. For
  HTTP(S) sources that is `guarded_create_connection`; for S3, `GuardedResolver` is the
  resolver of botocore's aiohttp connector, and an endpoint given as an IP literal (which
  aiohttp does not resolve) is checked by `check_url` when the filesystem is built.
- What really is internal is allowed through ENV_URL_ALLOWLIST: a comma-separated list of
  host names (matched exactly, case-insensitively: every address the name resolves to is
  allowed) and addresses or CIDRs. The operator sets it from its `--url-allowlist` flag;
  `collectjob-worker local` takes `--url-allowlist`.

Proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) are ignored by the worker's
HTTP client and its S3 client: a proxy would move the connection out of this check.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collectjob_api.contract import ENV_URL_ALLOWLIST
from collectjob_api.redact import redact_url
from collectjob_worker.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
ENV_SERVICE_HOST = "KUBERNETES_SERVICE_HOST"


class UrlRefused(PermanentError):
    """A URL whose host is, or resolves to, an address the policy does not allow."""


def _why_internal(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a globally routable one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _why_internal(ip.ipv4_mapped)
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    return next((reason for hit, reason in checks if hit), None)


@dataclass(frozen=True)
class UrlPolicy:
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    service_host: str = ""
    """The cluster's API service address, refused even when the range around it is allowed
    as a network (never when named exactly in the allowlist)."""

    @classmethod
    def parse(cls, allowlist: str, service_host: str = "") -> UrlPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in allowlist.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                if "/" not in entry:  # one address, named exactly: allowed even if the API's
                    hosts.add(str(ipaddress.ip_address(entry)))
            except ValueError:
                if "/" in entry or ":" in entry or " " in entry:
                    raise PermanentError(
                        f"{ENV_URL_ALLOWLIST}: {entry!r} is neither a host name nor an "
                        "address or CIDR"
                    ) from None
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), service_host)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> UrlPolicy:
        return cls.parse(env.get(ENV_URL_ALLOWLIST, ""), env.get(ENV_SERVICE_HOST, ""))

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to `ip` (for `host`) is refused, or None when it is allowed."""
        if host.lower().rstrip(".") in self.allowed_hosts or str(ip) in self.allowed_hosts:
            return None
        if self.service_host and _same_ip(self.service_host, ip):
            return "the cluster's API service"
        if any(ip in net for net in self.allowed_networks if net.version == ip.version):
            return None
        reason = _why_internal(ip)
        return f"a {reason} address" if reason else None

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """getaddrinfo results for `host`, all checked; refused if any address is refused."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise OSError(f"cannot resolve {host}: {e.strerror}") from e
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            why = self.refusal(host, ip)
            if why:
                raise UrlRefused(
                    f"host {host} resolves to {ip}, {why}; internal addresses are refused "
                    f"unless allowed in {ENV_URL_ALLOWLIST} (the operator's --url-allowlist)"
                )
        return infos

    def check_url(self, url: str, what: str) -> None:
        """Refuse `url` now if its host is or resolves to a refused address (for clients
        that connect on their own, e.g. an S3 endpoint given as an IP literal)."""
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise UrlRefused(f"{what} {redact_url(url)} has no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            self.resolve(parts.hostname, port)
        except UrlRefused as e:
            raise UrlRefused(f"{what} {redact_url(url)}: {e}") from None

    def create_connection(
        self,
        address: tuple[str, int],
        timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
        source_address: tuple[str, int] | None = None,
        **_: Any,
    ) -> socket.socket:
        """socket.create_connection, but to the checked addresses only (no second lookup)."""
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in self.resolve(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                error = e
        raise error or OSError(f"cannot connect to {host}:{port}")


def _same_ip(text: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def guarded_resolver(policy: UrlPolicy) -> Any:
    """An aiohttp resolver that answers only with addresses `policy` allowed, so the S3
    client connects to what was checked (aiohttp calls it for every new connection)."""
    import asyncio

    from aiohttp.abc import AbstractResolver, ResolveResult

    class GuardedResolver(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            loop = asyncio.get_running_loop()
            infos = await loop.run_in_executor(None, policy.resolve, host, port)
            return [
                ResolveResult(
                    hostname=host,
                    host=info[4][0],
                    port=info[4][1],
                    family=info[0],
                    proto=info[2],
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
                for info in infos
                if info[0] == family or family == socket.AF_UNSPEC
            ]

        async def close(self) -> None:
            """Nothing held: each lookup runs in the loop's default executor."""

    return GuardedResolver()
