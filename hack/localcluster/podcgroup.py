"""A container's memory limit in a cgroup the node owns, so that an OOM kill is seen.

On this kind of host (cgroup v1 memory controller, podman's cgroupfs manager) `podman run
--memory` does limit the container, but conmon misses the kernel's OOM event and
`podman inspect` reports OOMKilled false for a container the kernel killed for memory.
So the node makes one memory cgroup per container, /collectjob/<container>, puts the limit
there (memory and memory+swap) and starts the container under it (`--cgroup-parent`).
The kernel counts the kills in that cgroup's memory.oom_control (`oom_kill N`), which the
node reads after the container exits, before it removes the cgroup.

Where the v1 memory controller is not available (a cgroup v2 host), the limit is podman's
`--memory` and OOMKilled is what podman reports.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "collectjob"


def v1_memory(root: Path = CGROUP_ROOT) -> Path | None:
    """The v1 memory hierarchy if the node can create cgroups in it, else None."""
    memory = root / "memory"
    return memory if (memory / "memory.limit_in_bytes").exists() else None


class MemoryCgroup:
    """/collectjob/<name> in the v1 memory hierarchy, limited to `limit` bytes."""

    def __init__(self, name: str, limit: int, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        self.name = name
        self.limit = limit
        self.relative = f"/{PARENT}/{name}"

    @property
    def path(self) -> Path:
        return self.root / "memory" / PARENT / self.name

    def create(self) -> None:
        self.remove()
        self.path.mkdir(parents=True)
        # memsw is memory + swap: without it a container could swap past its limit.
        (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
        memsw = self.path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(self.limit))

    def oom_kills(self) -> int:
        try:
            text = (self.path / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Remove the cgroup (and what podman made under it) in every hierarchy."""
        for hierarchy in self.root.iterdir() if self.root.is_dir() else ():
            top = hierarchy / PARENT / self.name
            if not top.is_dir():
                continue
            for child in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
