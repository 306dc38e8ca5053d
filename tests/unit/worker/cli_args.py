"""The command line of a local worker run over a test's temp dir (source.csv, sink/,
state.json), every chunk committed as soon as it is written."""

from __future__ import annotations

from pathlib import Path


def local_args(tmp_path: Path, chunk_bytes: int = 1024, *extra: str) -> list[str]:
    return [
        "local",
        "--source",
        str(tmp_path / "source.csv"),
        "--sink",
        str(tmp_path / "sink"),
        "--state",
        str(tmp_path / "state.json"),
        "--chunk-bytes",
        str(chunk_bytes),
        "--min-commit-seconds",
        "0",
        *extra,
    ]
