"""`make image`: the Debian mirror comes from apt's own configuration; keys follow sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.containertools import tool_env
from localcluster.image import debian_mirror, tree_digest

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_is_read_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(DEB822)
    (tmp_path / "other.list.disabled").write_text("deb http://wrong.example bookworm main\n")
    assert debian_mirror([tmp_path]) == "http://deb.example.org/debian"


def test_the_mirror_is_read_from_one_line_sources(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text(
        "# deb http://commented.example bookworm main\n"
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert debian_mirror([sources]) == "http://mirror.example/debian"
    with pytest.raises(RuntimeError, match="no Debian mirror for trixie"):
        debian_mirror([sources], suite="trixie")


def test_the_source_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    before = tree_digest(tmp_path, ["pkg"], ["Dockerfile"])
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert tree_digest(tmp_path, ["pkg"], ["Dockerfile"]) == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert tree_digest(tmp_path, ["pkg"], ["Dockerfile"]) != before


def test_podman_and_buildah_use_only_the_projects_configuration(tmp_path: Path) -> None:
    env = tool_env(tmp_path, {"PATH": "/usr/bin", "CONTAINERS_CONF": "/etc/x", "KUBECONFIG": "k"})
    assert env["CONTAINERS_CONF"] == str(tmp_path / "containers.conf")
    assert env["CONTAINERS_STORAGE_CONF"] == str(tmp_path / "storage.conf")
    assert "KUBECONFIG" not in env
    conf = (tmp_path / "containers.conf").read_text()
    for setting in (
        'runtime = "runc"',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        '"nofile=20000:20000"',
        '"nproc=32768:32768"',
        'netns = "host"',
    ):
        assert setting in conf, setting
    storage = (tmp_path / "storage.conf").read_text()
    assert 'driver = "overlay"' in storage and str(tmp_path / "storage") in storage
