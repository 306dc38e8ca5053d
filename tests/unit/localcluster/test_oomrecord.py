"""An OOM kill is read from the kernel's record of the container's memory cgroup."""

from __future__ import annotations

from pathlib import Path

from localcluster.oomrecord import kernel_oom_cgroups, oom_killed_by_kernel

RECORD = (
    "6,1234,1296725470,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),"
    "cpuset=libpod-abc,mems_allowed=0,oom_memcg=/libpod_parent/libpod-abc,"
    "task_memcg=/libpod_parent/libpod-abc,task=python3,pid=13374,uid=10001\n"
    "3,1235,1296725529,-;Memory cgroup out of memory: Killed process 13374 (python3)\n"
)


def test_oom_records_name_their_cgroup(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(RECORD)
    assert kernel_oom_cgroups(kmsg) == {"/libpod_parent/libpod-abc"}
    assert oom_killed_by_kernel("abc", kmsg)
    assert not oom_killed_by_kernel("abd", kmsg)
    assert not oom_killed_by_kernel("", kmsg)
    assert kernel_oom_cgroups(tmp_path / "absent") == set()
