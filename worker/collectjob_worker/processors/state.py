"""Processor state: named byte blobs a processor keeps across chunks, committed with them.

Why beside the sink and per chunk: the checkpoint ConfigMap must stay small (etcd), and a
redone chunk must see exactly the state its first attempt saw. So the state after chunk N is
written to the sink as `_state/NNNNNN.bin` *before* the checkpoint commits chunk N, and chunk
N+1 starts from that file. A crash between the two leaves a file for a chunk that will be
redone from the state of chunk N-1, and overwritten with the redo's state. Files older than
the previous chunk's are deleted once a newer one is committed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, MutableMapping

from collectjob_api.contract import DEFAULT_PROCESSOR_STATE_BYTES as DEFAULT_STATE_LIMIT
from collectjob_worker.processors.context import ProcessorError

STATE_PREFIX = "_state/"
_MAGIC = b"CJS1"


def state_name(chunk_index: int) -> str:
    return f"{STATE_PREFIX}{chunk_index:06d}.bin"


class ProcessorState(MutableMapping[str, bytes]):
    """name -> bytes, with a size cap checked on every write."""

    def __init__(self, blobs: dict[str, bytes] | None = None, limit: int = DEFAULT_STATE_LIMIT):
        self._blobs = dict(blobs or {})
        self.limit = limit

    def __getitem__(self, name: str) -> bytes:
        return self._blobs[name]

    def __setitem__(self, name: str, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ProcessorError(f"processor state {name!r} must be bytes, got {type(value)}")
        others = sum(len(v) for k, v in self._blobs.items() if k != name)
        if others + len(value) > self.limit:
            raise ProcessorError(
                f"processor state would grow to {others + len(value)} bytes, over the job's "
                f"limit of {self.limit} bytes (spec.process.stateLimitBytes)"
            )
        self._blobs[name] = bytes(value)

    def __delitem__(self, name: str) -> None:
        del self._blobs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)

    def copy(self) -> ProcessorState:
        return ProcessorState(self._blobs, self.limit)

    def to_bytes(self) -> bytes:
        """A deterministic encoding: the same state always gives the same bytes."""
        names = sorted(self._blobs)
        index = json.dumps([[n, len(self._blobs[n])] for n in names]).encode()
        return b"".join(
            [_MAGIC, struct.pack(">Q", len(index)), index, *(self._blobs[n] for n in names)]
        )

    @classmethod
    def from_bytes(cls, data: bytes, limit: int = DEFAULT_STATE_LIMIT) -> ProcessorState:
        if data[:4] != _MAGIC:
            raise ProcessorError("processor state file is not in the expected format")
        (size,) = struct.unpack(">Q", data[4:12])
        index = json.loads(data[12 : 12 + size])
        blobs, at = {}, 12 + size
        for name, length in index:
            blobs[name] = data[at : at + length]
            at += length
        return cls(blobs, limit)
