"""Sinks: a directory, local (file:// or a plain path) or in an object store (s3://).

Every object is written whole and atomically, so a reader or a crash never sees half a part:
locally a temporary file in the same directory, fsynced, then renamed over the target; in
S3 a single PUT. The sink only stores bytes; what goes where is the manifest module's business.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from collectjob_worker import s3
from collectjob_worker.errors import PermanentError, SinkError
from collectjob_worker.retry import DEFAULT_BACKOFF, Backoff, retry
from collectjob_worker.sources import local_path

TEMP_PREFIX = ".tmp-"


class SinkStore(Protocol):
    url: str

    def put(self, name: str, data: Sequence[bytes]) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def list(self) -> list[str]: ...

    def delete(self, names: Iterable[str]) -> None: ...


def open_sink(url: str, backoff: Backoff = DEFAULT_BACKOFF) -> SinkStore:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("", "file"):
        return FileSink(url)
    if scheme == "s3":
        return S3Sink(url, backoff)
    raise PermanentError(f"sink {url}: scheme {scheme!r} is not one of file, s3")


class FileSink:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.root = local_path(url)

    def _fail(self, action: str, name: str, e: OSError) -> SinkError:
        return SinkError(f"cannot {action} {self.url}/{name}: {e.strerror or e}")

    def put(self, name: str, data: Sequence[bytes]) -> None:
        target = self.root / name
        temp = target.with_name(f"{TEMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as f:
                f.writelines(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
            _fsync_dir(target.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise self._fail("write", name, e) from e

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._fail("read", name, e) from e

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )

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
        self.url = url.rstrip("/")
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
            raise SinkError(f"cannot {action} {self.url}/{name}: {e}") from e

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

    def list(self) -> list[str]:
        def find() -> list[str]:
            self.fs.invalidate_cache(self.prefix)
            found = self.fs.find(self.prefix)
            return sorted(p.removeprefix(self.prefix + "/") for p in found)

        result: list[str] = self._call("list", "", find)
        return result

    def delete(self, names: Iterable[str]) -> None:
        paths = [f"{self.prefix}/{n}" for n in names]
        if paths:
            self._call("delete", paths[0], lambda: self.fs.rm(paths))
