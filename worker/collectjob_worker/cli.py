"""`collectjob-worker local` (no Kubernetes) and `collectjob-worker run` (cluster mode).

Exit codes (contract.EXIT_*): 0 when done, or stopped by a signal with its work committed or
the in-flight chunk abandoned; 2 after a permanent error, which is first recorded in the
checkpoint's `error` field (the operator fails the job with it); 3 when fenced by another
worker; 1 for anything else (transient trouble that outlasted the retries, or a bug), where a
restart may help. A rerun after a permanent error tries again and clears `error` when it
takes the checkpoint, since the cause may have been put right; a cause that persists is met
and recorded again (see pipeline.py).

`local` exits when the job is done. `run` does not: its pod belongs to a Deployment, which
restarts a container that exits, so a done worker (done when it starts, or just finished)
stays up, idle and without touching the source or the sink, until SIGTERM or SIGINT, then
exits 0. The operator scales the Deployment to zero when it sees the job done.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from collectjob_api.contract import (
    COMPRESSIONS,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_COMPRESSION,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_RETRY_FOR_SECONDS,
    ENV_URL_ALLOWLIST,
    EXIT_FAILED,
    EXIT_FENCED,
    EXIT_OK,
    EXIT_PERMANENT_ERROR,
    ProcessConfig,
    SinkOptions,
    WorkerIdentity,
)
from collectjob_api.models import parse
from collectjob_worker import early_stop
from collectjob_worker.checkpoint_store import (
    CheckpointStore,
    ConfigMapCheckpointStore,
    FileCheckpointStore,
)
from collectjob_worker.dialect import Dialect
from collectjob_worker.errors import CheckpointConflict, PermanentError, WorkerError
from collectjob_worker.formats import FORMATS
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import MIN_COMMIT_SECONDS, Job, Outcome, Pipeline
from collectjob_worker.processors import ProcessorError, ProcessorRunner
from collectjob_worker.processors.runner import JobRef
from collectjob_worker.progress import ProgressReporter, describe
from collectjob_worker.retry import RetryReporter
from collectjob_worker.sinks import open_sink
from collectjob_worker.sources import open_source
from collectjob_worker.supervise import run_supervised
from collectjob_worker.throttle import Throttle
from collectjob_worker.transform import Transform, TransformError

log = logging.getLogger("collectjob_worker")
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
    local.add_argument(
        "--compression", choices=COMPRESSIONS, default=DEFAULT_COMPRESSION, help="parquet"
    )
    local.add_argument(
        "--statistics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="parquet min/max statistics (default: on)",
    )
    local.add_argument("--schema", type=Path, help="transform, JSON or YAML (see transform.py)")
    local.add_argument("--chunk-bytes", type=_positive, default=DEFAULT_CHUNK_BYTES)
    local.add_argument(
        "--max-record-bytes",
        type=_positive,
        default=DEFAULT_MAX_RECORD_BYTES,
        help="a longer source record is a permanent error (default %(default)s bytes)",
    )
    local.add_argument(
        "--retry-for",
        type=_seconds,
        default=DEFAULT_RETRY_FOR_SECONDS,
        help="seconds to retry an unavailable source or sink before failing (default %(default)s)",
    )
    local.add_argument(
        "--min-commit-seconds",
        type=_seconds,
        default=MIN_COMMIT_SECONDS,
        help="least work per checkpoint commit; smaller chunks are coalesced (default %(default)s)",
    )
    local.add_argument("--state", required=True, type=Path, help="checkpoint file")
    local.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    local.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="how long a stop may take before the caller kills the process",
    )
    local.add_argument("--delimiter", default=",")
    local.add_argument("--quote", default='"')
    local.add_argument("--encoding", default="utf-8")
    local.add_argument("--no-header", dest="header", action="store_false")
    local.add_argument(
        "--url-allowlist",
        help=f"internal hosts, addresses and CIDRs that sources and S3 endpoints may reach "
        f"(comma-separated; default ${ENV_URL_ALLOWLIST})",
    )
    local.add_argument("--process", metavar="NAME", help="an installed processor to run")
    local.add_argument(
        "--process-options", metavar="JSON", default="{}", help="the processor's options"
    )
    local.add_argument(
        "--process-attempts", type=_positive, default=1, help="tries of a failing chunk"
    )
    commands.add_parser("run", help="cluster mode: identity and job from the pod's env")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
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


def _budget(grace_seconds: float) -> float:
    """Seconds a stop may spend finishing the in-flight chunk, leaving time to exit."""
    return max(1.0, grace_seconds - GRACE_MARGIN_SECONDS)


def _execute(
    pipeline: Pipeline, grace_seconds: float, on_exit: Callable[[], None] = lambda: None
) -> int:
    try:
        outcome = run_supervised(pipeline, _budget(grace_seconds))
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
        exit_now(EXIT_OK)
    if outcome is Outcome.DONE:
        log.info("done: %s", describe(cp))
    else:
        log.info("suspended at %s; run the same command again to resume", describe(cp))
    return EXIT_OK


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's finalization, once nothing is left to do:
    whatever was committed is durable, and the pipeline's threads may still be inside a
    pyarrow call. Finalization then waits on them: under load (100 workers on a 2-core node)
    workers that had logged their stop sat in it until the node killed them at the end of
    the grace period, which held back their jobs' Suspended by the whole grace period."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _local_processor(args: argparse.Namespace, metrics: WorkerMetrics) -> ProcessorRunner | None:
    if not args.process:
        return None
    try:
        options = json.loads(args.process_options)
    except json.JSONDecodeError as e:
        raise ProcessorError(f"--process-options is not valid JSON: {e}") from e
    raw = {"name": args.process, "options": options}
    spec = parse(ProcessConfig, raw, ProcessorError, lambda path: f"--process {path}".strip())
    # A local job's identity is its state file: stable across reruns, distinct per job.
    uid = f"local-{args.state.resolve()}"
    job = JobRef(args.state.stem, "local", uid)
    return ProcessorRunner(spec, job, args.process_attempts, metrics.processed)


def _cluster_processor(identity: WorkerIdentity, metrics: WorkerMetrics) -> ProcessorRunner | None:
    spec = identity.config.process
    if spec is None:
        return None
    job = JobRef(identity.job, identity.namespace, identity.job_uid or identity.job)
    return ProcessorRunner(spec, job, identity.config.backoff_limit + 1, metrics.processed)


def local(args: argparse.Namespace) -> int:
    retries = RetryReporter(args.retry_for)
    metrics = WorkerMetrics("local", args.state.stem)
    try:
        dialect = Dialect(args.delimiter, args.quote, args.encoding, args.header)
        transform = _load_schema(args.schema) if args.schema else None
        if args.url_allowlist is not None:
            os.environ[ENV_URL_ALLOWLIST] = args.url_allowlist
        store = FileCheckpointStore(args.state)
        job = Job(
            source=open_source(args.source, retries.backoff("SourceUnavailable")),
            sink=open_sink(
                args.sink, owner=store.owner_id(), backoff=retries.backoff("SinkUnavailable")
            ),
            sink_format=args.sink_format,
            dialect=dialect,
            transform=transform,
            store=store,
            holder=f"{socket.gethostname()}:{os.getpid()}",
            chunk_bytes=args.chunk_bytes,
            processor=_local_processor(args, metrics),
            sink_options=SinkOptions(args.compression, statistics=args.statistics),
            max_record_bytes=args.max_record_bytes,
            min_commit_seconds=args.min_commit_seconds,
        )
    except PermanentError as e:
        log.error("%s", e)
        return EXIT_PERMANENT_ERROR
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, "127.0.0.1")
    progress = ProgressReporter(sys.stderr, sys.stderr.isatty())
    pipeline = Pipeline(job, metrics, threading.Event(), on_commit=progress.update)
    retries.listeners += [progress.retrying, pipeline.note_retrying]
    return _execute(pipeline, args.grace_seconds, on_exit=progress.end_line)


def _record_setup_error(store: CheckpointStore, error: PermanentError) -> None:
    stored = store.load()
    try:
        store.save(stored.checkpoint.with_error(str(error)), stored.version)
    except CheckpointConflict as e:
        log.error("could not record the error: %s", e)


def idle_until_stopped() -> int:
    """Block until SIGTERM or SIGINT, then return EXIT_OK: what a done `run` does.

    The wait is on a socket that the interpreter's C-level signal handler writes to
    (signal.set_wakeup_fd): a signal that arrives at any moment, even before the wait begins,
    is not lost; nor is one recorded during the take-over (early_stop.py). Setting a
    threading.Event from a Python signal handler instead can deadlock when the signal lands
    while the main thread holds that event's lock.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {
        sig: signal.signal(sig, lambda signum, frame: None) for sig in early_stop.STOP_SIGNALS
    }
    try:
        if early_stop.take_over() is None:
            log.info("idle until SIGTERM or SIGINT")
            reader.recv(1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()
    log.info("stopped while idle")
    return EXIT_OK


def run() -> int:
    # Imported here: the Kubernetes client takes a third of a second to import, and `local`
    # never needs it.
    from kubernetes.client import CoreV1Api

    from collectjob_api.credentials import CredentialsError, api_client

    try:
        identity = WorkerIdentity.from_env()
        store = ConfigMapCheckpointStore(
            CoreV1Api(api_client()), identity.namespace, identity.configmap
        )
        if store.load().checkpoint.done:
            log.info("the checkpoint in %s says done; nothing to do", store.description)
            return idle_until_stopped()
        owner = store.owner_id()
    except (ValueError, WorkerError, CredentialsError) as e:
        log.error("%s", e)
        return EXIT_FAILED
    config = identity.config
    metrics = WorkerMetrics(identity.namespace, identity.job)
    # Both bounds were validated with the rest of the environment (WorkerIdentity).
    retries = RetryReporter(identity.retry_for_seconds)
    max_record = identity.max_record_bytes
    try:
        job = Job(
            source=open_source(config.source.url, retries.backoff("SourceUnavailable")),
            sink=open_sink(
                config.sink.url, owner=owner, backoff=retries.backoff("SinkUnavailable")
            ),
            sink_format=config.sink.format,
            dialect=Dialect.from_source(config.source),
            transform=Transform.from_dict(config.transform) if config.transform else None,
            store=store,
            holder=identity.pod,
            chunk_bytes=config.chunk_bytes,
            processor=_cluster_processor(identity, metrics),
            sink_options=config.sink.options,
            max_record_bytes=max_record,
            throttle=Throttle.of(config.throttle_bytes_per_second),
        )
    except PermanentError as e:
        log.error("permanent error: %s", e)
        _record_setup_error(store, e)
        return EXIT_PERMANENT_ERROR
    address = identity.pod_ip or "0.0.0.0"
    try:
        metrics.serve(config.metrics_port, address)
    except OSError as e:
        log.warning("not serving metrics on %s:%d: %s", address, config.metrics_port, e.strerror)
    pipeline = Pipeline(job, metrics, threading.Event())
    retries.listeners.append(pipeline.note_retrying)
    code = _execute(pipeline, identity.grace_seconds)
    if pipeline.stop.is_set():
        exit_now(code)
    if code == EXIT_OK and pipeline.checkpoint.done:
        return idle_until_stopped()
    return code


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
