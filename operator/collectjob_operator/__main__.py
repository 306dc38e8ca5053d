"""`collectjob-operator`: run the CollectJob operator (kopf) with its metrics and liveness.

Credentials come only from KUBECONFIG or the pod's service account (the rule in
collectjob_api.credentials, shared with the worker). The listen address defaults to the
pod's IP when the Deployment hands it over, otherwise to loopback: pods on the local node
share one network namespace, and nothing here should listen on every interface by accident.
"""

from __future__ import annotations

import argparse
import logging
import os

import kopf

from collectjob_api.redact import redact_text
from collectjob_operator import handlers  # noqa: F401  (importing registers the handlers)
from collectjob_operator.reconciler import DEFAULT_WORKERS

DEFAULT_METRICS_PORT = 9101
DEFAULT_LIVENESS_PORT = 8080
ENV_LISTEN_HOST = "POD_IP"


class RedactingFormatter(logging.Formatter):
    """Every log line, tracebacks included, with the URLs in it redacted (userinfo, query
    and fragment dropped): an API error or a worker's message may quote a signed URL."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="collectjob-operator",
        description="Run the CollectJob operator: one worker per CollectJob, driven by kopf.",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--listen-host",
        default=os.environ.get(ENV_LISTEN_HOST) or "127.0.0.1",
        help=f"address for /metrics and /healthz (default: ${ENV_LISTEN_HOST} or 127.0.0.1)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="port of /metrics; 0 disables it",
    )
    parser.add_argument(
        "--liveness-port",
        type=int,
        default=DEFAULT_LIVENESS_PORT,
        help="port of /healthz; 0 disables it",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="jobs reconciled at once at most (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-unguarded",
        action="store_true",
        help="start workers even while the admission policy collectjob-author-rights is not "
        "installed (then any CollectJob author can use what the operator can)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.workers < 1:
        raise SystemExit(f"--workers must be at least 1, got {args.workers}")
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if not args.verbose:
        # One line per handled event and per probe drowns the transitions worth reading.
        for noisy in ("kopf.objects", "kopf.activities.probe", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    liveness = None
    if args.liveness_port:
        liveness = f"http://{args.listen_host}:{args.liveness_port}/healthz"
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
        memo=kopf.Memo(
            metrics_port=args.metrics_port,
            listen_host=args.listen_host,
            workers=args.workers,
            allow_unguarded=args.allow_unguarded,
        ),
    )


if __name__ == "__main__":
    main()
