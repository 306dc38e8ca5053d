"""A local part is written around the page cache where the file system allows it, and its
bytes are the same either way: any length, any mix of pieces, aligned or not."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pytest

from collectjob_worker import directwrite
from collectjob_worker.directwrite import ALIGN, DIRECT_MIN_BYTES, STAGE_BYTES, DirectWriter


def _supports_direct(directory: Path) -> bool:
    try:
        fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as e:
        assert e.errno == errno.EINVAL, e
        return False
    os.close(fd)
    return True


def _pieces(total: int) -> list[bytes | pa.Buffer]:
    """Pieces of uneven sizes adding up to `total`, bytes and Arrow buffers alternately."""
    data = os.urandom(total)
    pieces: list[bytes | pa.Buffer] = []
    at, size = 0, 1
    while at < total:
        piece = data[at : at + size]
        pieces.append(piece if len(pieces) % 2 else pa.py_buffer(piece))
        at, size = at + len(piece), size * 7 + 3
    return pieces


@pytest.mark.parametrize(
    "total",
    [
        0,
        1,
        ALIGN - 1,
        DIRECT_MIN_BYTES - 1,
        DIRECT_MIN_BYTES,
        DIRECT_MIN_BYTES + 1,
        STAGE_BYTES,
        2 * STAGE_BYTES + ALIGN - 1,
    ],
)
def test_the_file_holds_the_pieces_and_large_ones_go_around_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, total: int
) -> None:
    staged = []
    real = DirectWriter._write_staged

    def spy(self: DirectWriter, fd: int, views: list[memoryview]) -> None:
        staged.append(fd)
        real(self, fd, views)

    monkeypatch.setattr(DirectWriter, "_write_staged", spy)
    pieces = _pieces(total)
    target = tmp_path / "part"
    DirectWriter().write(target, pieces)
    assert target.read_bytes() == b"".join(bytes(p) for p in pieces)
    assert bool(staged) == (total >= DIRECT_MIN_BYTES and _supports_direct(tmp_path))


def test_one_writer_writes_many_files_and_truncates_what_was_there(tmp_path: Path) -> None:
    writer = DirectWriter()
    first, second = os.urandom(3 * STAGE_BYTES // 2), os.urandom(DIRECT_MIN_BYTES + 5)
    writer.write(tmp_path / "a", [first])
    writer.write(tmp_path / "a", [second])
    writer.write(tmp_path / "b", [first])
    assert (tmp_path / "a").read_bytes() == second
    assert (tmp_path / "b").read_bytes() == first


def test_a_file_system_that_refuses_o_direct_gets_ordinary_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    refused = []

    def no_direct(path: Path, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(directwrite.os, "open", no_direct)
    data = os.urandom(DIRECT_MIN_BYTES * 2 + 7)
    DirectWriter().write(tmp_path / "part", [data])
    assert refused == [tmp_path / "part"]
    assert (tmp_path / "part").read_bytes() == data


def test_other_errors_are_not_taken_for_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DirectWriter().write(tmp_path / "missing" / "part", [os.urandom(DIRECT_MIN_BYTES)])
