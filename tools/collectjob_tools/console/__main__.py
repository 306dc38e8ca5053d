"""`collectjob-console`: serve the web console. Loopback only unless `--host` says otherwise.

Its own identity (`--kubeconfig`/`--context`, or the pod's ServiceAccount in a cluster)
is used for TokenReview only; see deploy/console/ for the least-privilege RBAC.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from kubernetes import client, config

from collectjob_api.addresses import is_loopback_host
from collectjob_tools.console.app import Settings, create_app

DEFAULT_TEMPLATE: dict[str, Any] = {
    "source": {"url": "file:///var/lib/collectjob/input.csv"},
    "sink": {"url": "file:///var/lib/collectjob/out/", "format": "jsonl"},
    "chunkBytes": 1048576,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="collectjob-console", description=__doc__)
    p.add_argument("--kubeconfig", help="the console's own identity (default: in-cluster)")
    p.add_argument("--context")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--namespace", default="default", help="the namespace shown first")
    p.add_argument("--template", type=Path, help="a CollectJob manifest new jobs start from")
    p.add_argument(
        "--cookie-secure",
        choices=["auto", "yes", "no"],
        default="auto",
        help="Secure cookies (auto: unless listening on loopback, which is http)",
    )
    p.add_argument(
        "--login-token-file",
        type=Path,
        help="print a one-time login link for the bearer token in this file",
    )
    return p


def _identity(args: argparse.Namespace) -> client.ApiClient:
    if args.kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    conf = client.Configuration()
    config.load_incluster_config(client_configuration=conf)
    return client.ApiClient(conf)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    template = DEFAULT_TEMPLATE
    if args.template:
        template = dict(yaml.safe_load(args.template.read_text())["spec"])
    secure = args.cookie_secure == "yes" or (
        args.cookie_secure == "auto" and not is_loopback_host(args.host)
    )
    settings = Settings(
        api=_identity(args), namespace=args.namespace, template=template, secure_cookies=secure
    )
    app = create_app(settings)
    base = f"http://{args.host}:{args.port}"
    print(f"collectjob-console on {base}/ (log in with a Kubernetes bearer token)", flush=True)
    if args.login_token_file:
        code = app.state.sessions.one_time_code(args.login_token_file.read_text().strip())
        print(f"one-time login link: {base}/login/once/{code}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            server_header=False,
            proxy_headers=False,
            log_level="warning",
            # Live-update streams stay open while a page is; don't wait for them at exit.
            timeout_graceful_shutdown=2,
        )
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
