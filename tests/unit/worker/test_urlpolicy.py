"""The URL policy against real servers on loopback: internal addresses are refused after DNS
and on every redirect, the allowlist lets named hosts and networks through, and the proxy
variables are ignored.

Every server here listens on a loopback address, which the policy counts as internal: a
test allows exactly the address it means to reach, so the refusals are real refusals.
"""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from collectjob_api.contract import ENV_URL_ALLOWLIST, EXIT_PERMANENT_ERROR
from collectjob_worker import s3
from collectjob_worker.errors import PermanentError
from collectjob_worker.retry import Backoff
from collectjob_worker.sources import HttpSource, open_source
from collectjob_worker.urlpolicy import UrlPolicy, UrlRefused, guarded_resolver

BODY = b"id,name\n1,a\n"
_FAST = Backoff(deadline=1)


class _Recorder(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_HEAD(self) -> None:
        self.server.respond(self, body=False)

    def do_GET(self) -> None:
        self.server.respond(self, body=True)


class Server(http.server.ThreadingHTTPServer):
    """Serves BODY at every path, or redirects to `redirect`, and records what it was asked."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Recorder)
        self.url = f"http://{host}:{self.server_address[1]}/data.csv"
        self.redirect = ""
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []

    def respond(self, handler: _Recorder, body: bool) -> None:
        self.requests.append(f"{handler.command} {handler.path}")
        self.authorizations.append(handler.headers.get("Authorization"))
        if self.redirect:
            handler.send_response(302)
            handler.send_header("Location", self.redirect)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BODY)))
        handler.end_headers()
        if body:
            handler.wfile.write(BODY)


@pytest.fixture
def serve() -> Iterator[Callable[[str], Server]]:
    started: list[tuple[Server, threading.Thread]] = []

    def start(host: str) -> Server:
        server = Server(host)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_internal_addresses_are_refused_by_default(address: str, kind: str) -> None:
    assert UrlPolicy().refusal("h", ipaddress.ip_address(address)) == f"a {kind} address"


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert UrlPolicy().refusal("h", ipaddress.ip_address(address)) is None


def test_the_allowlist_takes_hosts_addresses_and_networks() -> None:
    policy = UrlPolicy.parse("Minio.Internal., 10.0.0.0/8 , 127.0.0.1")
    assert policy.refusal("minio.internal", ipaddress.ip_address("192.168.0.9")) is None
    assert policy.refusal("x", ipaddress.ip_address("10.9.9.9")) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.2")) == "a loopback address"
    with pytest.raises(PermanentError, match=f"{ENV_URL_ALLOWLIST}: 'a b'"):
        UrlPolicy.parse("a b")


def test_the_api_service_address_stays_refused_inside_an_allowed_network() -> None:
    policy = UrlPolicy.parse("10.0.0.0/8", service_host="10.96.0.1")
    assert policy.refusal("x", ipaddress.ip_address("10.96.0.1")) == "the cluster's API service"
    assert policy.refusal("x", ipaddress.ip_address("10.96.0.2")) is None


def test_the_api_service_address_is_allowed_when_named_exactly() -> None:
    """In a container of the local node the API server is on 127.0.0.1 (host networking),
    next to the loopback sources an allowlist of `127.0.0.1` lets through."""
    policy = UrlPolicy.parse("127.0.0.1", service_host="127.0.0.1")
    assert policy.refusal("127.0.0.1", ipaddress.ip_address("127.0.0.1")) is None
    policy = UrlPolicy.parse("127.0.0.0/8", service_host="127.0.0.1")
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1")) == "the cluster's API service"


def test_a_loopback_source_is_refused_without_the_allowlist(serve, monkeypatch) -> None:
    monkeypatch.delenv(ENV_URL_ALLOWLIST, raising=False)
    server = serve("127.0.0.1")
    source = open_source(server.url, _FAST)
    expected = f"source {re.escape(server.url)}: host 127.0.0.1 resolves to 127.0.0.1, a loopback"
    with pytest.raises(UrlRefused, match=f"{expected} address.*{ENV_URL_ALLOWLIST}"):
        source.stat()
    assert server.requests == []


def test_the_allowlist_from_the_env_lets_a_named_address_through(serve, monkeypatch) -> None:
    server = serve("127.0.0.1")
    monkeypatch.setenv(ENV_URL_ALLOWLIST, "127.0.0.1")
    source = open_source(server.url, _FAST)
    assert source.stat().size == len(BODY)
    assert source.read(0, 100) == BODY


def test_a_host_name_is_checked_after_dns(serve) -> None:
    server = serve("127.0.0.1")
    url = server.url.replace("127.0.0.1", "localhost")
    with pytest.raises(UrlRefused, match=r"host localhost resolves to 127\.0\.0\.1"):
        HttpSource(url, _FAST, UrlPolicy()).stat()
    assert HttpSource(url, _FAST, UrlPolicy.parse("localhost")).stat().size == len(BODY)


@pytest.mark.parametrize("spelling", ["2130706433", "0177.0.0.1", "0x7f.1", "[::ffff:127.0.0.1]"])
def test_odd_spellings_of_loopback_are_checked_as_the_address_they_reach(serve, spelling) -> None:
    server = serve("127.0.0.1")
    url = server.url.replace("127.0.0.1", spelling)
    with pytest.raises(UrlRefused, match="a loopback address"):
        HttpSource(url, _FAST, UrlPolicy()).stat()
    assert server.requests == []


def test_every_redirect_is_checked(serve) -> None:
    """An allowed server redirecting to an internal address (here another loopback address,
    standing for 169.254.169.254) is refused, and the internal server is never contacted."""
    internal = serve("127.0.0.2")
    public = serve("127.0.0.1")
    public.redirect = internal.url
    source = HttpSource(public.url, _FAST, UrlPolicy.parse("127.0.0.1"))
    with pytest.raises(UrlRefused, match=r"127\.0\.0\.2, a loopback address"):
        source.stat()
    assert public.requests == ["HEAD /data.csv"] and internal.requests == []

    allowed = HttpSource(public.url, _FAST, UrlPolicy.parse("127.0.0.1,127.0.0.2"))
    assert allowed.stat().size == len(BODY)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_a_redirect_to_another_scheme_is_refused(serve, target: str) -> None:
    server = serve("127.0.0.1")
    server.redirect = target
    with pytest.raises(PermanentError, match="cannot read source"):
        HttpSource(server.url, _FAST, UrlPolicy.parse("127.0.0.1")).stat()


def test_proxy_variables_are_ignored(serve, monkeypatch) -> None:
    proxy = serve("127.0.0.3")
    target = serve("127.0.0.1")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.3:{proxy.server_address[1]}")
    source = HttpSource(target.url, _FAST, UrlPolicy.parse("127.0.0.1,127.0.0.3"))
    assert source.read(0, 100) == BODY
    assert proxy.requests == [] and set(target.requests) == {"GET /data.csv"}


def test_credentials_in_a_source_url_never_reach_a_message(serve) -> None:
    server = serve("127.0.0.1")
    url = server.url.replace("http://", "http://user:s3cr3t@") + "?sig=s3cr3t"
    source = HttpSource(url, _FAST, UrlPolicy())
    with pytest.raises(UrlRefused) as caught:
        source.stat()
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in source.url


def test_url_credentials_go_to_the_named_host_only_never_to_a_redirect(serve) -> None:
    first, second = serve("127.0.0.1"), serve("127.0.0.2")
    first.redirect = second.url
    url = first.url.replace("http://", "http://user:s3cr3t@")
    assert HttpSource(url, _FAST, UrlPolicy.parse("127.0.0.0/8")).stat().size == len(BODY)
    assert first.authorizations == ["Basic dXNlcjpzM2NyM3Q="]
    assert second.authorizations == [None]


def test_an_s3_endpoint_on_loopback_is_refused(monkeypatch, moto_server: str) -> None:
    monkeypatch.delenv(ENV_URL_ALLOWLIST, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    with pytest.raises(UrlRefused, match=r"S3 endpoint http://127\.0\.0\.1:.*a loopback address"):
        s3.filesystem()


def test_s3_connections_resolve_through_the_policy(monkeypatch, s3_store) -> None:
    """An endpoint given by name goes through the guarded resolver on every connection."""
    port = s3_store.endpoint.rsplit(":", 1)[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://localhost:{port}")
    fs = s3.filesystem(UrlPolicy.parse("localhost"))
    fs.pipe_file(f"{s3_store.bucket}/x.csv", BODY)
    assert fs.cat_file(f"{s3_store.bucket}/x.csv") == BODY

    async def lookup(policy: UrlPolicy) -> Any:
        return await guarded_resolver(policy).resolve("localhost", int(port))

    with pytest.raises(UrlRefused, match="host localhost resolves to"):
        asyncio.run(lookup(UrlPolicy()))
    assert asyncio.run(lookup(UrlPolicy.parse("localhost")))


def test_s3_ignores_proxy_variables(serve, monkeypatch, s3_store) -> None:
    proxy = serve("127.0.0.3")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.3:{proxy.server_address[1]}")
    fs = s3.filesystem(UrlPolicy.parse("127.0.0.1,127.0.0.3"))
    fs.pipe_file(f"{s3_store.bucket}/y.csv", BODY)
    assert fs.cat_file(f"{s3_store.bucket}/y.csv") == BODY
    assert proxy.requests == []


def test_local_mode_takes_the_allowlist_as_a_flag(serve, worker_cli, monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_URL_ALLOWLIST, raising=False)
    server = serve("127.0.0.1")
    args = ["local", "--source", server.url, "--sink", str(tmp_path / "out")]
    refused = worker_cli.run(*args, "--state", str(tmp_path / "a.json"))
    assert refused.returncode == EXIT_PERMANENT_ERROR
    assert (
        f"a loopback address; internal addresses are refused unless allowed in {ENV_URL_ALLOWLIST}"
        in refused.stderr
    )

    allowed = worker_cli.run(
        *args, "--state", str(tmp_path / "b.json"), "--url-allowlist", "127.0.0.1"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_s3_never_asks_the_instance_metadata_service_for_credentials(
    serve, monkeypatch, s3_store
) -> None:
    """Without credentials of its own, a job must not borrow the node's IAM role."""
    imds = serve("127.0.0.3")
    monkeypatch.setenv(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.3:{imds.server_address[1]}"
    )
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    fs = s3.filesystem(UrlPolicy.parse("127.0.0.1,127.0.0.3"))
    with pytest.raises(Exception, match=r"(?i)credentials") as caught:
        fs.cat_file(f"{s3_store.bucket}/absent.csv")
    assert imds.requests == [], caught.value
