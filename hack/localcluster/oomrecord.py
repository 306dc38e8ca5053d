"""Whether the kernel OOM-killed a container: its own record, when podman's flag is wrong.

On this kind of host (cgroup v1 memory controller, podman's cgroupfs manager, a 6.18
kernel) `podman run --memory` does limit the container and the kernel does kill it at the
limit, but conmon misses the OOM event: `podman inspect` says OOMKilled false, and the
cgroup's own counters (memory.oom_control's oom_kill, memory.failcnt) stay 0. The kernel's
log still records each kill with the memory cgroup it happened in
(`oom_memcg=/libpod_parent/libpod-<container id>`), so the node reads /dev/kmsg after a
container exits with 137. Container ids are unique, so a record names one container.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

KMSG = Path("/dev/kmsg")
OOM_RECORD = re.compile(r"oom_memcg=([^,\s]+)")


def kernel_oom_cgroups(kmsg: Path = KMSG) -> set[str]:
    """The memory cgroups the kernel's log records an OOM kill in (what it still holds)."""
    found: set[str] = set()
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return found
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while being read; go on
                continue
            if not record:
                break
            found.update(OOM_RECORD.findall(record.decode(errors="replace")))
    finally:
        os.close(fd)
    return found


def oom_killed_by_kernel(container_id: str, kmsg: Path = KMSG) -> bool:
    """Whether the kernel's log has an OOM kill in the cgroup of this container."""
    marker = f"libpod-{container_id}"
    return bool(container_id) and any(marker in cgroup for cgroup in kernel_oom_cgroups(kmsg))
