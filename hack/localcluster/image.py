"""`make image`: the project's image, built here without a registry, and cached.

Three cached steps, each keyed by what it is made from, so a second run reuses them:
  1. the base: a Debian root filesystem (debootstrap minbase + python3, python3-venv, from
     the mirror apt is configured with) as ~/.cache/collectjob/base/<key>/rootfs.tar, and
     `localhost/collectjob-base:<key>` built from it (FROM scratch, ADD rootfs.tar /);
     keyed by suite, variant, packages and mirror;
  2. the wheelhouse: every runtime dependency of `collectjob-operator[worker]`, pinned to
     requirements.lock, with the hashes of the files on PyPI, fetched on the host (a build
     container has no network); keyed by requirements.lock and pyproject.toml;
  3. the image: the repository's Dockerfile, built by buildah with BASE set to the base
     above, the wheelhouse and the project's own wheel as build context; keyed by the base,
     the wheelhouse, the Dockerfile and the sources, recorded as a label on the image.
The image is exported as an OCI archive (.cluster/images/collectjob.oci.tar).

`processors_image()` builds `localhost/collectjob-processors:dev` on top of it, for the
cluster tests: the example processor and the tests' own processors (tests/support), whose
wheels are unpacked into the venv's site-packages (pure-Python wheels; the image has no
pip), which is all a processor's entry point needs to be found.

Elsewhere, `python -m localcluster.image --context-only` prepares build/image/ and any
builder can run `docker build -f Dockerfile build/image` with the default BASE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from localcluster.containertools import RUNC, ensure_tools, run_tool, tool_env
from localcluster.paths import CACHE_DIR, REPO_ROOT, ClusterPaths

IMAGE = "localhost/collectjob:dev"
PROCESSORS_IMAGE = "localhost/collectjob-processors:dev"
PROCESSOR_PROJECTS = (REPO_ROOT / "examples" / "processor", REPO_ROOT / "tests" / "support")
SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"
BASE_REPO = "localhost/collectjob-base"
KEY_LABEL = "dev.collectjob.build-key"
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "tini")
CONTEXT = REPO_ROOT / "build" / "image"
SOURCE_DIRS = ("api", "operator", "worker")
# README.md is packaged as the wheel's description only: editing it does not rebuild the image.
SOURCE_FILES = ("pyproject.toml", "requirements.lock", "Dockerfile")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
# What debootstrap leaves that an image never needs: downloaded packages and apt's lists.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists")
VENV = Path(sys.executable).parent


def digest(parts: Iterable[bytes | str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def debian_mirror(sources: Iterable[Path] = APT_SOURCES, suite: str = SUITE) -> str:
    """The first `deb` mirror apt uses for `suite` (one-line or deb822 format)."""
    files: list[Path] = []
    for path in sources:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources"))
        elif path.is_file():
            files.append(path)
    for path in files:
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                uri_at = 2 if words[1].startswith("[") else 1
                if words[uri_at + 1 :] and words[uri_at + 1] == suite:
                    return words[uri_at]
        for stanza in re.split(r"\n\s*\n", text):
            fields = _deb822_fields(stanza)
            types, suites = fields.get("Types", "").split(), fields.get("Suites", "").split()
            if "deb" in types and suite in suites and fields.get("URIs"):
                return fields["URIs"].split()[0]
    raise RuntimeError(f"no Debian mirror for {suite} in {', '.join(map(str, sources))}")


def _deb822_fields(stanza: str) -> dict[str, str]:
    """`Field: value` lines of one deb822 stanza (comments and continuation lines skipped)."""
    fields = {}
    for line in stanza.splitlines():
        if line.startswith(("#", " ", "\t")) or ":" not in line:
            continue
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def tree_digest(root: Path, dirs: Iterable[str], files: Iterable[str]) -> str:
    """A digest of the sources an image is built from (names and contents)."""
    paths = [root / f for f in files]
    for d in dirs:
        paths += sorted(
            p
            for p in (root / d).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        )
    return digest(part for p in paths for part in (str(p.relative_to(root)), p.read_bytes()))


STARTED = time.monotonic()


def log(message: str) -> None:
    """A step, with the seconds since the build started (each step's cost, cold or warm)."""
    print(f">> [{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def image_label(env: Mapping[str, str], image: str) -> str | None:
    """The build key recorded on `image`, or None when the store has no such image."""
    result = run_tool(
        ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{KEY_LABEL}"}}}}', image],
        env,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def base_rootfs(cache: Path, mirror: str) -> tuple[Path, str]:
    """The root filesystem tarball of the base, made by debootstrap if not cached."""
    key = digest([SUITE, VARIANT, ",".join(PACKAGES), mirror])
    tar = cache / "base" / key / "rootfs.tar"
    if tar.exists():
        return tar, key
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root to build the base root filesystem")
    work = tar.parent / "rootfs.dir"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"debootstrap {VARIANT} {SUITE} + {' '.join(PACKAGES)} from {mirror} (about a minute)")
    subprocess.run(
        [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(work),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for prune in PRUNE:
        for path in (work / prune).glob("*"):
            if path.is_file() and path.name not in ("lock",):
                path.unlink()
    partial = tar.with_name("rootfs.tar.partial")
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(work), "-cf", str(partial), "."],
        check=True,
    )
    partial.rename(tar)
    shutil.rmtree(work)
    return tar, key


def base_image(env: Mapping[str, str], tar: Path, key: str) -> str:
    """`localhost/collectjob-base:<key>`: FROM scratch, ADD rootfs.tar /."""
    tag = f"{BASE_REPO}:{key}"
    if image_label(env, tag) == key:
        return tag
    containerfile = tar.parent / "Containerfile"
    containerfile.write_text(f'FROM scratch\nADD rootfs.tar /\nLABEL {KEY_LABEL}="{key}"\n')
    log(f"building the base image {tag}")
    run_tool(
        [
            "buildah",
            "bud",
            "--isolation",
            "chroot",
            "-f",
            str(containerfile),
            "-t",
            tag,
            str(tar.parent),
        ],
        env,
    )
    return tag


def wheelhouse(cache: Path) -> Path:
    """Wheels of every runtime dependency, pinned to the lock, with PyPI's hashes."""
    lock = (REPO_ROOT / "requirements.lock").read_bytes()
    key = digest([lock, (REPO_ROOT / "pyproject.toml").read_bytes()])
    house = cache / "wheels" / key
    if (house / "requirements.txt").exists():
        return house
    partial = house.with_name(f"{key}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    requirements = partial / "requirements.txt"
    log("pinning the image's dependencies to requirements.lock, with hashes")
    subprocess.run(
        [
            str(VENV / "uv"),
            "pip",
            "compile",
            "-q",
            str(REPO_ROOT / "pyproject.toml"),
            "--extra",
            "worker",
            "--constraint",
            str(REPO_ROOT / "requirements.lock"),
            "--generate-hashes",
            "--python-version",
            "3.11",
            "--python-platform",
            "linux",
            "--no-header",
            "--no-annotate",
            "-o",
            str(requirements),
        ],
        check=True,
    )
    log("fetching the wheels on the host (the build has no network)")
    subprocess.run(
        [
            str(VENV / "python"),
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--no-deps",
            "--require-hashes",
            "-r",
            str(requirements),
            "-d",
            str(partial),
        ],
        check=True,
    )
    partial.rename(house)
    return house


def build_context(house: Path, context: Path = CONTEXT) -> Path:
    """build/image/: deps/ (the wheelhouse, hard links) and project/ (the project's wheel)."""
    deps, project = context / "deps", context / "project"
    shutil.rmtree(context, ignore_errors=True)
    deps.mkdir(parents=True)
    for path in house.iterdir():
        os.link(path, deps / path.name)
    subprocess.run(
        [str(VENV / "uv"), "build", "-q", "--wheel", "--out-dir", str(project), str(REPO_ROOT)],
        check=True,
    )
    for leftover in project.glob(".*"):  # uv's own .gitignore: not part of the context
        leftover.unlink()
    return context


def export_archive(env: Mapping[str, str], key: str, archive: Path) -> None:
    stamp = archive.with_suffix(".key")
    if archive.exists() and stamp.exists() and stamp.read_text() == key:
        return
    log(f"exporting the image as an OCI archive, {archive}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    run_tool(["buildah", "push", "--quiet", IMAGE, f"oci-archive:{archive}:collectjob:dev"], env)
    stamp.write_text(key)


def build(context_only: bool = False, paths: ClusterPaths | None = None) -> str:
    """Build (or reuse) the image; returns its name."""
    paths = paths or ClusterPaths.default()
    house = wheelhouse(CACHE_DIR)
    if context_only:
        print(build_context(house))
        return IMAGE
    ensure_tools()
    env = tool_env()
    tar, base_key = base_rootfs(CACHE_DIR, debian_mirror())
    base = base_image(env, tar, base_key)
    key = digest([base_key, house.name, tree_digest(REPO_ROOT, SOURCE_DIRS, SOURCE_FILES)])
    if image_label(env, IMAGE) != key:
        context = build_context(house)
        log(f"building {IMAGE} from the Dockerfile on {base}")
        _bud(env, REPO_ROOT / "Dockerfile", context, IMAGE, key, "--build-arg", f"BASE={base}")
    export_archive(env, key, paths.images / "collectjob.oci.tar")
    return IMAGE


def _bud(
    env: Mapping[str, str], containerfile: Path, context: Path, tag: str, key: str, *args: str
) -> None:
    """buildah bud with runc, no network, cached layers, and the build key as a label."""
    run_tool(
        [
            "buildah",
            "bud",
            "--isolation",
            "oci",
            "--runtime",
            RUNC,
            "--network",
            "none",
            "--layers",
            *args,
            "--label",
            f"{KEY_LABEL}={key}",
            "-f",
            str(containerfile),
            "-t",
            tag,
            str(context),
        ],
        env,
        timeout=1200,
    )


def processors_image() -> str:
    """The project's image plus the example and test processors (see the module docstring);
    rebuilt when the project's image or the processors' sources change."""
    env = tool_env()
    base_key = image_label(env, IMAGE)
    if base_key is None:
        raise RuntimeError(f"{IMAGE} is not built (make image)")
    sources = [tree_digest(p, ("src",), ("pyproject.toml",)) for p in PROCESSOR_PROJECTS]
    key = digest([base_key, *sources])
    if image_label(env, PROCESSORS_IMAGE) == key:
        return PROCESSORS_IMAGE
    context = CONTEXT.parent / "processors"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for project in PROCESSOR_PROJECTS:
        subprocess.run(
            [str(VENV / "uv"), "build", "-q", "--wheel", "--out-dir", str(context), str(project)],
            check=True,
        )
    unpack = (
        "import glob, zipfile; "
        f"[zipfile.ZipFile(w).extractall({SITE_PACKAGES!r}) for w in glob.glob('/wheels/*.whl')]"
    )
    (context / "Containerfile").write_text(
        f"FROM {IMAGE}\nUSER 0\nCOPY *.whl /wheels/\n"
        f"RUN {json.dumps(['python3', '-c', unpack])}\nUSER 10001:10001\n"
    )
    log(f"building {PROCESSORS_IMAGE} on {IMAGE}")
    _bud(env, context / "Containerfile", context, PROCESSORS_IMAGE, key)
    return PROCESSORS_IMAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster.image", description=__doc__)
    parser.add_argument(
        "--context-only",
        action="store_true",
        help="only prepare build/image/ (wheels) for another builder; print its path",
    )
    args = parser.parse_args(argv)
    image = build(args.context_only)
    if not args.context_only:
        log(f"{image} ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
