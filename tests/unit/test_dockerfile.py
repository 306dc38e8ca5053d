"""The Dockerfile passes hadolint and starts only console scripts this project installs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from localcluster.paths import REPO_ROOT as ROOT

VENV_BIN = Path(sys.executable).parent


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_entry_points_are_installed_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    text = (ROOT / "Dockerfile").read_text()
    entry = [json.loads(m) for m in re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)]
    assert entry == [["tini", "--"]], "tini is PID 1, the command comes after it"
    named = {json.loads(m)[0] for m in re.findall(r"^CMD (\[.*\])$", text, re.M)}
    named |= set(re.findall(r"`(collectjob-\w+)", text))
    assert named, "the Dockerfile names no entry point"
    assert named <= set(scripts), f"{named - set(scripts)} are not console scripts"
    assert {"collectjob-operator", "collectjob-worker"} <= named
    for name in named:
        assert (VENV_BIN / name).exists(), f"{name} is not installed in {VENV_BIN}"


def test_final_stage_runs_as_non_root_without_build_tools() -> None:
    final_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1]
    assert re.search(r"^USER 10001", final_stage, re.M)
    assert "pip install" not in final_stage and "apt-get" not in final_stage
