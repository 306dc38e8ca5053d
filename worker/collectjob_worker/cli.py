"""`collectjob-worker local` (no Kubernetes) and `collectjob-worker run` (cluster mode).

Exit codes (contract.EXIT_*): 0 when done, or stopped by a signal with its work committed or
the in-flight chunk abandoned; 2 after a permanent error, which is first recorded in the
checkpoint's `error` field (the operator fails the job with it; a restarted worker meets the
same error again rather than running); 3 when fenced by another worker; 1 for anything else
(transient trouble that outlasted the retries, or a bug), where a restart may help.

In cluster mode a checkpoint that says done makes the worker exit 0 at once, without
touching the source or the sink.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collectjob_worker.checkpoint_store import (
    CheckpointStore,
    ConfigMapCheckpointStore,
    FileCheckpointStore,
)
from collectjob_worker.contract import (
    ENV_GRACE_SECONDS,
    ENV_METRICS_PORT,
    EXIT_FAILED,
    EXIT_FENCED,
    EXIT_OK,
    EXIT_PERMANENT_ERROR,
    WorkerIdentity,
)
from collectjob_worker.dialect import Dialect
from collectjob_worker.errors import CheckpointConflict, PermanentError, WorkerError
from collectjob_worker.formats import FORMATS
from collectjob_worker.kube import core_v1_from_env
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import Job, Outcome, Pipeline
from collectjob_worker.progress import ProgressReporter, describe
from collectjob_worker.sinks import open_sink
from collectjob_worker.sources import open_source
from collectjob_worker.supervise import run_supervised
from collectjob_worker.transform import Transform, TransformError

log = logging.getLogger("collectjob_worker")
DEFAULT_GRACE_SECONDS = 30.0
GRACE_MARGIN_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collectjob-worker", description="Chunked, checkpointed, resumable CSV processing."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="process a CSV on this machine, state in a file")
    local.add_argument("--source", required=True, help="file://, http(s):// or s3:// URL")
    local.add_argument("--sink", required=True, help="output directory: path, file:// or s3://")
    local.add_argument("--sink-format", choices=FORMATS, default="csv")
    local.add_argument("--schema", type=Path, help="transform, JSON or YAML (see transform.py)")
    local.add_argument("--chunk-bytes", type=_positive, default=64 << 20)
    local.add_argument("--state", required=True, type=Path, help="checkpoint file")
    local.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    local.add_argument("--delimiter", default=",")
    local.add_argument("--quote", default='"')
    local.add_argument("--encoding", default="utf-8")
    local.add_argument("--no-header", dest="header", action="store_false")
    commands.add_parser("run", help="cluster mode: identity and job from the pod's env")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _load_schema(path: Path) -> Transform:
    try:
        text = path.read_text()
    except OSError as e:
        raise PermanentError(f"cannot read schema {path}: {e.strerror}") from e
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TransformError(f"schema {path} is neither JSON nor YAML: {e}") from e
    return Transform.from_dict(raw)


def _budget() -> float:
    grace = float(os.environ.get(ENV_GRACE_SECONDS) or DEFAULT_GRACE_SECONDS)
    return max(1.0, grace - GRACE_MARGIN_SECONDS)


def _execute(pipeline: Pipeline, on_exit: Callable[[], None] = lambda: None) -> int:
    try:
        outcome = run_supervised(pipeline, _budget())
    except PermanentError as e:
        on_exit()
        log.error("permanent error: %s", e)
        return EXIT_PERMANENT_ERROR
    except CheckpointConflict as e:
        on_exit()
        log.error("fenced, stopping without committing: %s", e)
        return EXIT_FENCED
    except WorkerError as e:
        on_exit()
        log.error("%s", e)
        return EXIT_FAILED
    on_exit()
    cp = pipeline.checkpoint
    if outcome is None:
        log.warning("stopped, abandoning the in-flight chunk (it will be redone): %s", describe(cp))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    if outcome is Outcome.DONE:
        log.info("done: %s", describe(cp))
    else:
        log.info("suspended at %s; run the same command again to resume", describe(cp))
    return EXIT_OK


def local(args: argparse.Namespace) -> int:
    try:
        dialect = Dialect(args.delimiter, args.quote, args.encoding, args.header)
        transform = _load_schema(args.schema) if args.schema else None
        job = Job(
            source=open_source(args.source),
            sink=open_sink(args.sink),
            sink_format=args.sink_format,
            dialect=dialect,
            transform=transform,
            store=FileCheckpointStore(args.state),
            holder=f"{socket.gethostname()}:{os.getpid()}",
            chunk_bytes=args.chunk_bytes,
        )
    except PermanentError as e:
        log.error("%s", e)
        return EXIT_PERMANENT_ERROR
    metrics = WorkerMetrics("local", args.state.stem)
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, "127.0.0.1")
    progress = ProgressReporter(sys.stderr, sys.stderr.isatty())
    pipeline = Pipeline(job, metrics, threading.Event(), on_commit=progress.update)
    return _execute(pipeline, on_exit=progress.end_line)


def _record_setup_error(store: CheckpointStore, error: PermanentError) -> None:
    stored = store.load()
    try:
        store.save(stored.checkpoint.with_error(str(error)), stored.version)
    except CheckpointConflict as e:
        log.error("could not record the error: %s", e)


def run() -> int:
    try:
        identity = WorkerIdentity.from_env()
        store = ConfigMapCheckpointStore(core_v1_from_env(), identity.namespace, identity.configmap)
        if store.load().checkpoint.done:
            log.info("the checkpoint in %s says done; nothing to do", store.description)
            return EXIT_OK
    except (ValueError, WorkerError) as e:
        log.error("%s", e)
        return EXIT_FAILED
    config = identity.config
    try:
        job = Job(
            source=open_source(config.source.url),
            sink=open_sink(config.sink.url),
            sink_format=config.sink.format,
            dialect=Dialect.from_source(config.source),
            transform=Transform.from_dict(config.transform) if config.transform else None,
            store=store,
            holder=identity.pod,
            chunk_bytes=config.chunk_bytes,
        )
    except PermanentError as e:
        log.error("permanent error: %s", e)
        _record_setup_error(store, e)
        return EXIT_PERMANENT_ERROR
    metrics = WorkerMetrics(identity.namespace, identity.job)
    port = int(os.environ.get(ENV_METRICS_PORT) or config.metrics_port)
    address = identity.pod_ip or "0.0.0.0"
    try:
        metrics.serve(port, address)
    except OSError as e:
        log.warning("not serving metrics on %s:%d: %s", address, port, e.strerror)
    return _execute(Pipeline(job, metrics, threading.Event()))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "local":
        return local(args)
    return run()
