"""Sources the worker reads from at any byte offset: file://, http(s):// and s3://.

Each source reports a fingerprint (size and mtime for files, the ETag or size and
Last-Modified for HTTP, the ETag for S3). The checkpoint records it, and a different
fingerprint later means the source changed: a permanent error, never a mix of two versions.

Reads are random access, so a resume costs the same at 90% as at 10%. An HTTP server that
ignores Range requests is still read correctly, by streaming from the start and discarding
the processed prefix (it is downloaded again but never parsed again), with a warning.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from collectjob_api.redact import bounded, redact_text, redact_url
from collectjob_worker import s3
from collectjob_worker.errors import PermanentError, SourceChanged
from collectjob_worker.retry import DEFAULT_BACKOFF, Backoff, retry
from collectjob_worker.urlpolicy import UrlPolicy, UrlRefused

log = logging.getLogger(__name__)
SCHEMES = ("file", "http", "https", "s3")
_HTTP_TIMEOUT = 30.0
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410}
_CONTENT_RANGE = re.compile(r"bytes (?P<first>\d+)-(?P<last>\d+)/(?P<total>\d+|\*)")


@dataclass(frozen=True)
class SourceStat:
    size: int
    fingerprint: str


class Source(Protocol):
    url: str
    """The source as messages and the manifest show it: redacted (collectjob_api.redact)."""
    block_bytes: int
    """How much to read at a time: small enough for a quick first row, large for throughput."""
    rereads_cheaply: bool
    """Reading a range again costs no more than copying it: a local file (its page cache),
    not a network source, where each read is a request."""

    def stat(self) -> SourceStat: ...

    def read(self, offset: int, size: int) -> bytes: ...


def open_source(
    url: str, backoff: Backoff = DEFAULT_BACKOFF, policy: UrlPolicy | None = None
) -> Source:
    """The source for `url`; network sources obey `policy` (by default from the env)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("", "file"):
        return FileSource(url)
    if scheme in ("http", "https"):
        return HttpSource(url, backoff, policy)
    if scheme == "s3":
        return S3Source(url, backoff, policy)
    raise PermanentError(
        f"source {redact_url(url)}: scheme {scheme!r} is not one of {', '.join(SCHEMES)}"
    )


def local_path(url: str) -> Path:
    """The path of a file:// URL or of a plain path."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    return Path(url)


class FileSource:
    """Reads with pread on one descriptor, open for the source's life: the worker process's."""

    block_bytes = 2 << 20
    """A block is parsed, held and encoded whole on one thread, several at once, so its size
    multiplies into the peak RSS; every block also costs a parse call, a handover between
    the stages and a transform's compute calls, whatever its size. On the bench file
    (tests/bench, 64 MiB chunks; medians of 7-11 A/B rounds) 2 MiB blocks took 5.5% less time
    than 1 MiB ones for csv -> parquet (0.617 s against 0.653 s), 14% less with a typed
    transform (0.698 s against 0.810 s), 6% less for csv -> csv; 3 and 4 MiB blocks gained
    nothing more (the first block and the last part wait longer). The peak RSS rose by 5-13
    MiB, and on the 2 GB file of the memory bench csv and parquet stayed 26 MiB or more
    within their bound. JSON Lines take smaller blocks (`Job.block_bytes`)."""

    rereads_cheaply = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = local_path(url)
        self._fd: int | None = None

    def stat(self) -> SourceStat:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise PermanentError(f"cannot read source {self.url}: {e.strerror}") from e
        return SourceStat(st.st_size, f"size={st.st_size};mtime_ns={st.st_mtime_ns}")

    def read(self, offset: int, size: int) -> bytes:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return os.pread(self._fd, size, offset)
        except OSError as e:
            raise PermanentError(f"cannot read source {self.url}: {e.strerror}") from e


def _http_transient(e: BaseException) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code not in _PERMANENT_HTTP
    return isinstance(e, (urllib.error.URLError, OSError, http.client.HTTPException))


def _guarded(connection: Any, policy: UrlPolicy) -> Any:
    """A connection class for urllib's do_open whose sockets go only where `policy` allows."""

    def make(host: str, **kwargs: Any) -> Any:
        conn = connection(host, **kwargs)
        conn._create_connection = policy.create_connection
        return conn

    return make


class _GuardedHttpHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_guarded(http.client.HTTPConnection, self.policy), req)


class _GuardedHttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(
            _guarded(http.client.HTTPSConnection, self.policy),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


def http_opener(policy: UrlPolicy) -> urllib.request.OpenerDirector:
    """http and https only (a redirect to ftp:// or file:// fails), every connection, the
    redirects' included, checked by `policy`, and no proxy: without a ProxyHandler the
    HTTP(S)_PROXY variables are not consulted."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _GuardedHttpHandler(policy),
        _GuardedHttpsHandler(policy),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class HttpSource:
    """Reads are bounded: at most the bytes asked for are read from a response, whatever
    the server sends or claims, and a ranged answer must cover exactly the asked range."""

    block_bytes = 8 << 20
    rereads_cheaply = False

    def __init__(self, url: str, backoff: Backoff, policy: UrlPolicy | None = None) -> None:
        self._target, self._authorization = _split_userinfo(url)
        self.url = redact_url(url)
        self.backoff = backoff
        self._opener = http_opener(policy or UrlPolicy.from_env())
        self._etag = ""
        self._size: int | None = None
        self._ranges = True
        self._stream: BinaryIO | None = None
        self._stream_pos = 0

    def _call(self, what: str, call: Any) -> Any:
        try:
            return retry(
                call, transient=_http_transient, what=f"{what} {self.url}", backoff=self.backoff
            )
        except urllib.error.HTTPError as e:
            raise PermanentError(f"cannot read source {self.url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise PermanentError(f"cannot read source {self.url}: {redact_text(str(e))}") from e
        except UrlRefused as e:
            raise UrlRefused(f"source {self.url}: {e}") from e

    def _open(self, headers: dict[str, str], method: str = "GET") -> Any:
        request = urllib.request.Request(self._target, headers=headers, method=method)
        if self._authorization:
            request.add_unredirected_header("Authorization", self._authorization)
        return self._opener.open(request, timeout=_HTTP_TIMEOUT)

    def stat(self) -> SourceStat:
        def head() -> SourceStat:
            with self._open({}, "HEAD") as response:
                length = response.headers.get("Content-Length")
                etag = response.headers.get("ETag") or ""
                modified = response.headers.get("Last-Modified") or ""
            if length is None:
                raise PermanentError(f"source {self.url}: the server does not report its size")
            size = _non_negative(length)
            if size is None:
                raise PermanentError(
                    f"source {self.url}: Content-Length {bounded(length, 40)!r} is not a size"
                )
            self._etag, self._size = etag, size
            if etag:
                return SourceStat(size, f"etag={etag}")
            return SourceStat(size, f"size={size};last-modified={modified}")

        result: SourceStat = self._call("HEAD", head)
        return result

    def read(self, offset: int, size: int) -> bytes:
        if self._ranges:
            data: bytes | None = self._call("GET", lambda: self._read_range(offset, size))
            if data is not None:
                return data
            log.warning(
                "source %s ignores Range requests: reading it from the start and skipping "
                "what was already processed (it is downloaded again, not parsed again)",
                self.url,
            )
            self._ranges = False
        result: bytes = self._call("GET", lambda: self._read_stream(offset, size))
        return result

    def _read_range(self, offset: int, size: int) -> bytes | None:
        headers = {"Range": f"bytes={offset}-{offset + size - 1}"}
        try:
            with self._open(headers) as response:
                if response.status != 206:
                    return None
                etag = response.headers.get("ETag") or ""
                if self._etag and etag and etag != self._etag:
                    raise SourceChanged(
                        f"source {self.url} changed while being read "
                        f"(ETag was {self._etag}, now {etag})"
                    )
                length = self._check_range(response.headers.get("Content-Range"), offset, size)
                data: bytes = response.read(length + 1)
        except urllib.error.HTTPError as e:
            if e.code == 416:
                return b""
            raise
        if len(data) > length:
            raise PermanentError(
                f"source {self.url} sent more than the {length} bytes it announced for "
                f"the range at offset {offset}; refusing a misbehaving server"
            )
        if len(data) < length:
            raise http.client.IncompleteRead(data, length - len(data))
        return data

    def _check_range(self, header: str | None, offset: int, size: int) -> int:
        """The number of bytes a 206 answer carries, after checking that its Content-Range
        is the range asked for (or its start, cut at the end of the source)."""
        match = _CONTENT_RANGE.fullmatch((header or "").strip())
        first, last = (int(match["first"]), int(match["last"])) if match else (-1, -1)
        if not match or first != offset or last < first or last > offset + size - 1:
            raise PermanentError(
                f"source {self.url} answered the range {offset}-{offset + size - 1} with "
                f"Content-Range {bounded(header or '(none)', 80)!r}; refusing a misbehaving "
                "server"
            )
        total = match["total"]
        if total != "*" and self._size is not None and int(total) != self._size:
            raise SourceChanged(
                f"source {self.url} changed while being read (size was {self._size}, "
                f"Content-Range says {total})"
            )
        return last - first + 1

    def _read_stream(self, offset: int, size: int) -> bytes:
        try:
            if self._stream is None or offset < self._stream_pos:
                self._drop_stream()
                self._stream = self._open({})
                self._stream_pos = 0
            while self._stream_pos < offset:
                skipped = self._stream.read(min(1 << 20, offset - self._stream_pos))
                if not skipped:
                    return b""
                self._stream_pos += len(skipped)
            data = self._stream.read(size)
            self._stream_pos += len(data)
            return data
        except Exception:
            self._drop_stream()
            raise

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _split_userinfo(url: str) -> tuple[str, str]:
    """The URL without its `user:password@`, and that userinfo as a Basic Authorization
    header (urllib would otherwise take it for part of the host name). The header is never
    sent on to a redirect's target."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, ""
    user, _, password = userinfo.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return (
        urllib.parse.urlunsplit(parts._replace(netloc=hostport)),
        "Basic " + base64.b64encode(token.encode()).decode("ascii"),
    )


def _non_negative(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


class S3Source:
    block_bytes = 8 << 20
    rereads_cheaply = False

    def __init__(self, url: str, backoff: Backoff, policy: UrlPolicy | None = None) -> None:
        self.url = redact_url(url)
        self.path = s3.path_of(url)
        self.backoff = backoff
        self.fs = s3.filesystem(policy)

    def _call(self, what: str, call: Any) -> Any:
        try:
            return retry(
                call, transient=s3.transient, what=f"{what} {self.url}", backoff=self.backoff
            )
        except (FileNotFoundError, PermissionError) as e:
            raise PermanentError(f"cannot read source {self.url}: {redact_text(str(e))}") from e

    def stat(self) -> SourceStat:
        def info() -> SourceStat:
            meta = self.fs.info(self.path, refresh=True)
            etag = str(meta.get("ETag") or meta.get("etag") or "")
            size = int(meta["size"])
            return SourceStat(size, f"etag={etag}" if etag else f"size={size}")

        result: SourceStat = self._call("HEAD", info)
        return result

    def read(self, offset: int, size: int) -> bytes:
        result: bytes = self._call(
            "GET", lambda: self.fs.cat_file(self.path, start=offset, end=offset + size)
        )
        return result
