"""Whose a sink directory is: a job writes only into a directory it owns.

Before its first write (a part, a ledger entry, a deletion), a job claims its sink:

- the sink holds OWNER_MARKER naming this job's owner id: it is ours, go on;
- the marker names someone else: refused, two jobs cannot share a sink;
- there is no marker and the sink is empty: create the marker, exclusively (a local hard
  link, or an S3 PUT with If-None-Match), then read it back; of two jobs racing for one
  empty directory, one wins and the other is refused;
- there is no marker and the sink is not empty: refused, it holds someone else's files
  (save the temporary file of this claim, left by a worker killed while it wrote the marker:
  the job's clean-up removes it like its other temporaries).

The owner id is the CollectJob's UID in a cluster (from the checkpoint ConfigMap's
controlling owner) and, in local mode, an id derived from the state file's path; see
checkpoint_store. Refusals are permanent errors: the job fails with a message saying which
directory and why, and nothing in the directory is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from collectjob_worker.errors import PermanentError
from collectjob_worker.temporaries import temporary_pattern

if TYPE_CHECKING:
    from collectjob_worker.sinks import RawSink

OWNER_MARKER = "_collectjob_owner.json"
_MARKER_VERSION = 1
_MARKER_TEMPORARY = re.compile(temporary_pattern(re.escape(OWNER_MARKER)))
"""The temporary file of a claim killed before its marker was linked into place (FileSink's
publish): the only thing the sink can hold that is not someone else's, so not a refusal."""


class SinkNotOwned(PermanentError):
    """The sink belongs to another job, or holds files no job of ours wrote."""


def _owner_in(marker: bytes) -> str | None:
    try:
        owner = json.loads(marker).get("owner")
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


class OwnedSink:
    """A sink that claims its directory for `owner` before its first write or deletion."""

    def __init__(self, inner: RawSink, owner: str) -> None:
        if not owner:
            raise ValueError("a sink needs its job's owner id")
        self.inner = inner
        self.owner = owner
        self.url = inner.url
        self._claimed = False

    def claim(self) -> None:
        if self._claimed:
            return
        marker = self.inner.get(OWNER_MARKER)
        if marker is None:
            present = [n for n in self.inner.list() if not _MARKER_TEMPORARY.fullmatch(n)]
            if present:
                raise SinkNotOwned(
                    f"sink {self.url} is not empty ({len(present)} entries) and has no "
                    f"{OWNER_MARKER} "
                    "naming this job: refusing to write into, or clean up, a directory this "
                    "job did not create; point the sink at a new or empty directory"
                )
            body = json.dumps({"owner": self.owner, "version": _MARKER_VERSION}).encode()
            self.inner.create(OWNER_MARKER, body)
            marker = self.inner.get(OWNER_MARKER)
        if marker is None or _owner_in(marker) != self.owner:
            raise SinkNotOwned(
                f"sink {self.url} belongs to another job (its {OWNER_MARKER} names a "
                "different owner): two jobs cannot share a sink; give this job its own"
            )
        self._claimed = True

    def put(self, name: str, data: Sequence[bytes]) -> None:
        self.claim()
        self.inner.put(name, data)

    def get(self, name: str) -> bytes | None:
        return self.inner.get(name)

    def list(self, directory: str = "") -> list[str]:
        return self.inner.list(directory)

    def delete(self, names: Iterable[str]) -> None:
        self.claim()
        self.inner.delete(names)
