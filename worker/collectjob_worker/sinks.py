"""Sinks: a directory, local (file:// or a plain path) or in an object store (s3://).

Every object is written whole and atomically, so a reader or a crash never sees half a part:
locally a temporary file in the same directory, written around the page cache where the file
system allows it (directwrite.py), fsynced, then renamed over the target; in S3 a single PUT.
The sink only stores bytes; what goes where is the manifest module's business, and whose the
directory is, the ownership module's (`open_sink` returns an owned sink).

Listing is never recursive: `list(directory)` names what is directly in one directory, so
cleaning up can never reach into a tree the worker did not lay out. URLs are kept redacted
(`url`) for messages.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from collectjob_api.redact import redact_text, redact_url
from collectjob_worker import s3
from collectjob_worker.directwrite import DirectWriter
from collectjob_worker.errors import PermanentError, SinkError
from collectjob_worker.ownership import OwnedSink
from collectjob_worker.retry import DEFAULT_BACKOFF, Backoff, retry
from collectjob_worker.sources import local_path
from collectjob_worker.temporaries import temporary_name


class SinkStore(Protocol):
    url: str
    """The sink as messages show it: redacted (collectjob_api.redact)."""

    def put(self, name: str, data: Sequence[bytes]) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def list(self, directory: str = "") -> list[str]:
        """What is directly in `directory` (relative to the sink), as names relative to the
        sink; subdirectories end in "/". Nothing below them."""
        ...

    def delete(self, names: Iterable[str]) -> None: ...


class RawSink(SinkStore, Protocol):
    def create(self, name: str, data: bytes) -> bool:
        """Write `name` only if it does not exist yet, atomically; False if it existed."""
        ...


def open_sink(url: str, *, owner: str, backoff: Backoff = DEFAULT_BACKOFF) -> SinkStore:
    """The sink at `url`, claimed for `owner` (the job's owner id) at its first write."""
    return OwnedSink(open_raw_sink(url, backoff), owner)


def open_raw_sink(url: str, backoff: Backoff = DEFAULT_BACKOFF) -> RawSink:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("", "file"):
        return FileSink(url)
    if scheme == "s3":
        return S3Sink(url, backoff)
    raise PermanentError(f"sink {redact_url(url)}: scheme {scheme!r} is not one of file, s3")


def _joined(directory: str, name: str) -> str:
    return f"{directory.strip('/')}/{name}" if directory.strip("/") else name


class FileSink:
    def __init__(self, url: str) -> None:
        self.url = redact_url(url.rstrip("/"))
        self.root = local_path(url)
        self._writer = DirectWriter()

    def _fail(self, action: str, name: str, e: OSError) -> SinkError:
        return SinkError(f"cannot {action} {self.url}/{name}: {e.strerror or e}")

    def _publish(self, name: str, data: Sequence[bytes], exclusive: bool) -> bool:
        """Write a temporary file beside the target, fsync it, then move it into place:
        over the target, or (exclusive) only where there is none, by a hard link that
        fails if the target exists. False when it existed."""
        target = self.root / name
        temp = target.with_name(temporary_name(target.name, uuid.uuid4().hex[:8]))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._writer.write(temp, data)
            if exclusive:
                try:
                    os.link(temp, target)
                except FileExistsError:
                    return False
            else:
                os.replace(temp, target)
            _fsync_dir(target.parent)
            return True
        except OSError as e:
            raise self._fail("create" if exclusive else "write", name, e) from e
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)

    def put(self, name: str, data: Sequence[bytes]) -> None:
        self._publish(name, data, exclusive=False)

    def create(self, name: str, data: bytes) -> bool:
        return self._publish(name, [data], exclusive=True)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._fail("read", name, e) from e

    def list(self, directory: str = "") -> list[str]:
        try:
            with os.scandir(self.root / directory) as entries:
                return sorted(
                    _joined(directory, e.name + ("/" if e.is_dir(follow_symlinks=False) else ""))
                    for e in entries
                )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise self._fail("list", directory, e) from e

    def delete(self, names: Iterable[str]) -> None:
        parents = set()
        for name in names:
            path = self.root / name
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise self._fail("delete", name, e) from e
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            if parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Sink:
    def __init__(self, url: str, backoff: Backoff) -> None:
        self.url = redact_url(url.rstrip("/"))
        self.prefix = s3.path_of(url)
        self.backoff = backoff
        self.fs = s3.filesystem()

    def _call(self, action: str, name: str, call: Any) -> Any:
        try:
            return retry(
                call,
                transient=s3.transient,
                what=f"{action} {self.url}/{name}",
                backoff=self.backoff,
            )
        except (OSError, ValueError) as e:
            raise SinkError(f"cannot {action} {self.url}/{name}: {redact_text(str(e))}") from e

    def put(self, name: str, data: Sequence[bytes]) -> None:
        body = b"".join(data)
        self._call("write", name, lambda: self.fs.pipe_file(f"{self.prefix}/{name}", body))

    def get(self, name: str) -> bytes | None:
        def cat() -> bytes | None:
            try:
                data: bytes = self.fs.cat_file(f"{self.prefix}/{name}")
                return data
            except FileNotFoundError:
                return None

        result: bytes | None = self._call("read", name, cat)
        return result

    def create(self, name: str, data: bytes) -> bool:
        """A conditional PUT (If-None-Match: *). A store that ignores the condition makes
        this an overwrite; the ownership check reads the marker back to catch that."""

        def put() -> bool:
            try:
                self.fs.pipe_file(f"{self.prefix}/{name}", data, mode="create")
            except FileExistsError:
                return False
            return True

        result: bool = self._call("create", name, put)
        return result

    def list(self, directory: str = "") -> list[str]:
        where = f"{self.prefix}/{directory}".rstrip("/")

        def ls() -> list[str]:
            self.fs.invalidate_cache(where)
            try:
                found = self.fs.ls(where, detail=True)
            except FileNotFoundError:
                return []
            return sorted(
                e["name"].removeprefix(self.prefix + "/")
                + ("/" if e["type"] == "directory" else "")
                for e in found
            )

        result: list[str] = self._call("list", directory, ls)
        return result

    def delete(self, names: Iterable[str]) -> None:
        paths = [f"{self.prefix}/{n}" for n in names]
        if paths:
            self._call("delete", paths[0], lambda: self.fs.rm(paths))
