"""`kubectl collectjob`: CollectJobs for people who don't write patch JSON.

kubectl runs any `kubectl-collectjob` on PATH as `kubectl collectjob`, and passes its flags
through; this follows kubectl's conventions: `--kubeconfig`, `--context`, `-n`, `-A`,
`-l`, `-o json|yaml|wide`. Exit codes: 0 success; 1 an API error, a job that did not reach
what was asked (or, for `watch`, ended other than Succeeded); 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from kubernetes import config

from collectjob_api.client import (
    Action,
    CollectJobClient,
    CollectJobError,
    Job,
    missed,
)
from collectjob_tools import render

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
WATCH_REDRAW_SECONDS = 1.0


def _connection(defaults: bool) -> argparse.ArgumentParser:
    """kubectl's connection flags. They go before or after the command, as with kubectl:
    the command's copy has no defaults, so it never overwrites a value given before it."""
    common = argparse.ArgumentParser(add_help=False)
    unset: Any = None if defaults else argparse.SUPPRESS
    common.add_argument(
        "--kubeconfig", help="path to the kubeconfig file (as kubectl)", default=unset
    )
    common.add_argument("--context", help="the kubeconfig context to use", default=unset)
    common.add_argument(
        "-n", "--namespace", help="the namespace (default: the context's)", default=unset
    )
    common.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        default=10.0 if defaults else argparse.SUPPRESS,
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common = _connection(defaults=False)

    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("names", nargs="*", metavar="NAME")
    selection.add_argument(
        "-l", "--selector", default="", help="label selector, e.g. collect.dev/request=r-42"
    )
    selection.add_argument("-A", "--all-namespaces", action="store_true")

    parser = argparse.ArgumentParser(
        prog="kubectl collectjob",
        description="Inspect and control CollectJobs.",
        parents=[_connection(defaults=True)],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("get", "list"):
        p = sub.add_parser(name, parents=[common, selection], help="table of jobs with progress")
        p.add_argument("-o", "--output", choices=["json", "yaml", "wide"])
    for action in Action:
        p = sub.add_parser(str(action), parents=[common, selection], help=f"{action} jobs")
        p.add_argument("--all", action="store_true", help="every job in the namespace")
        p.add_argument("--wait", action="store_true", help="until each job reaches the phase")
        p.add_argument("--timeout", type=float, default=300, metavar="SECONDS")
        p.add_argument("--dry-run", action="store_true", help="server-side dry run only")
    for name, text in (
        ("watch", "a live progress bar until the job ends"),
        ("describe", "status, conditions, checkpoint and events"),
        ("logs", "the worker's log"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("name", metavar="NAME")
        if name == "watch":
            p.add_argument("--timeout", type=float, default=3600, metavar="SECONDS")
        if name == "logs":
            p.add_argument(
                "--node-logs",
                type=Path,
                metavar="DIR",
                help="where the node keeps pod logs, when the API cannot serve "
                "them (default: node/logs next to the kubeconfig)",
            )
    return parser


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c["name"] == args.context), active)
    return str((chosen.get("context") or {}).get("namespace") or "default")


def _client(args: argparse.Namespace) -> CollectJobClient:
    return CollectJobClient.from_kubeconfig(args.kubeconfig, args.context, args.request_timeout)


def _select(api: CollectJobClient, args: argparse.Namespace, require: bool) -> list[Job]:
    namespace = None if args.all_namespaces else _namespace(args)
    if args.names:
        if args.selector or getattr(args, "all", False):
            raise SystemExit("error: give NAMEs, or -l SELECTOR, or --all; not several")
        if namespace is None:
            raise SystemExit("error: NAMEs need a namespace; -A works with -l or --all only")
        return [api.get(namespace, name) for name in args.names]
    if require and not (args.selector or args.all):
        raise SystemExit("error: give NAMEs, -l SELECTOR or --all")
    return api.list(namespace, args.selector)


def _row(job: Job, wide: bool, all_namespaces: bool) -> list[str]:
    row = [job.namespace] if all_namespaces else []
    row += [
        job.name,
        job.phase or "Pending",
        render.bar(job.percent),
        f"{job.rows_processed:,}",
        render.rate(job),
        render.eta(job),
        render.age(job),
    ]
    if wide:
        row += [job.client or "-", job.request or "-", render.throttle(job), job.message or "-"]
    return row


def jobs_table(jobs: list[Job], wide: bool = False, all_namespaces: bool = False) -> str:
    head = ["NAMESPACE"] if all_namespaces else []
    head += ["NAME", "PHASE", "PROGRESS", "ROWS", "RATE", "ETA", "AGE"]
    if wide:
        head += ["CLIENT", "REQUEST", "THROTTLE", "MESSAGE"]
    return render.table([head, *(_row(j, wide, all_namespaces) for j in jobs)])


def cmd_get(api: CollectJobClient, args: argparse.Namespace, out: TextIO) -> int:
    jobs = _select(api, args, require=False)
    if args.output in ("json", "yaml"):
        items = [j.model_dump(mode="json") for j in jobs]
        doc: Any = {"items": items} if not args.names or len(items) != 1 else items[0]
        text = json.dumps(doc, indent=2) + "\n" if args.output == "json" else yaml.safe_dump(doc)
        out.write(text)
        return EXIT_OK
    if not jobs:
        where = "any namespace" if args.all_namespaces else f"namespace {_namespace(args)}"
        print(f"No CollectJobs found in {where}.", file=sys.stderr)
        return EXIT_OK
    print(jobs_table(jobs, args.output == "wide", args.all_namespaces), file=out)
    return EXIT_OK


def _ref(job: Job) -> str:
    return f"collectjob/{job.name} ({job.namespace})"


ACT_CONCURRENCY = 8
"""Patches a bulk action has in flight at once: a round trip each, so 100 jobs take about
as long as 13, while the API server sees no more than a few clients' worth."""


def cmd_action(api: CollectJobClient, args: argparse.Namespace, out: TextIO) -> int:
    """One line per job, then a summary; exit 1 if any job failed or did not get there."""
    action = Action(args.command)
    jobs = _select(api, args, require=True)

    def act(job: Job) -> Job | CollectJobError:
        try:
            return api.act(job.namespace, job.name, action, dry_run=args.dry_run).job
        except CollectJobError as e:
            return e

    with ThreadPoolExecutor(max_workers=ACT_CONCURRENCY) as pool:
        results = list(pool.map(act, jobs))  # in the selection's order
    done, failed = [], []
    for job, result in zip(jobs, results, strict=True):
        if isinstance(result, CollectJobError):
            failed.append(job)
            print(f"{_ref(job)}: {action} refused: {result.detail}", file=out)
            continue
        done.append(result)
        suffix = " (server dry run)" if args.dry_run else ""
        print(f"{_ref(job)}: {action} requested{suffix}", file=out)
    if args.wait and not args.dry_run:
        seen = api.wait_all([(j.namespace, j.name) for j in done], action.target, args.timeout)
        for job in list(done):
            last = seen.get((job.namespace, job.name))
            if last is not None and last.phase in action.target:
                print(f"{_ref(job)}: {last.phase}", file=out)
                continue
            failed.append(job)
            done.remove(job)
            why = (
                "deleted while waiting"
                if last is None
                else missed(last, action.target, args.timeout)
            )
            print(f"{_ref(job)}: {why}", file=out)
    verb = {
        "suspend": "suspended",
        "resume": "resumed",
        "stop": "stopped",
        "terminate": "terminated",
    }[str(action)]
    state = verb if args.wait and not args.dry_run else f"{action} requested"
    print(f"{len(done)} {state}, {len(failed)} failed, {len(jobs)} selected", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_watch(api: CollectJobClient, args: argparse.Namespace, out: TextIO) -> int:
    """One watch stream at a time (renewed every 30 s), a line redrawn on every change."""
    namespace = _namespace(args)
    job = api.get(namespace, args.name)
    redraw = out.isatty()
    deadline = time.monotonic() + args.timeout
    last = ""

    def draw(job: Job) -> None:
        nonlocal last
        line = (
            f"{job.name}  {job.phase or 'Pending':<10} {render.bar(job.percent)}  "
            f"{job.rows_processed:,} rows  {render.rate(job)}  ETA {render.eta(job)}"
        )
        if line != last:
            out.write(("\r\033[K" + line) if redraw else line + "\n")
            out.flush()
            last = line

    draw(job)
    while not job.final and (left := deadline - time.monotonic()) > 0:
        for _, job in api.watch(namespace, name=args.name, timeout=min(30, left)):
            draw(job)
            if job.final:
                break
    if redraw:
        out.write("\n")
    if not job.final:
        print(
            f"error: {namespace}/{args.name} still {job.phase} after {args.timeout:g}s",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if job.phase != "Succeeded" and job.message:
        print(f"{job.phase}: {job.message}", file=out)
    return EXIT_OK if job.phase == "Succeeded" else EXIT_FAILED


def cmd_describe(api: CollectJobClient, args: argparse.Namespace, out: TextIO) -> int:
    namespace = _namespace(args)
    job = api.get(namespace, args.name)
    lines = [
        f"Name:          {job.name}",
        f"Namespace:     {job.namespace}",
        f"Client:        {job.client or '-'}",
        f"Request:       {job.request or '-'}",
        f"Phase:         {job.phase or 'Pending'}",
        f"Progress:      {render.bar(job.percent)}",
        f"Rows:          {job.rows_processed:,} ({job.rows_rejected:,} rejected)",
        f"Rate:          {render.rate(job)}",
        f"ETA:           {render.eta(job)}",
        f"Throttle:      {render.throttle(job)}",
        f"Suspend:       {job.suspend}",
        f"Shutdown:      {job.shutdown or '-'}",
        f"Message:       {job.message or '-'}",
        "Conditions:",
        render.table(
            [["  TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
            + [
                [
                    f"  {c.type}",
                    c.status,
                    c.reason,
                    str(c.last_transition_time or "-"),
                    c.message or "-",
                ]
                for c in job.conditions
            ]
        ),
    ]
    checkpoint = api.checkpoint(namespace, args.name)
    if checkpoint is None:
        lines.append("Checkpoint:    none yet")
    else:
        lines += [
            f"Checkpoint:    {job.checkpoint_configmap or '-'}",
            f"  Offset:      {checkpoint.offset:,} of {checkpoint.bytes_total:,} bytes",
            f"  Line:        {checkpoint.line:,}; chunk {checkpoint.chunk_index}",
            f"  Updated:     {checkpoint.updated_at or '-'}; done={checkpoint.done}",
        ]
        if checkpoint.error:
            lines.append(f"  Error:       {checkpoint.error}")
    events = api.events(namespace, args.name)
    lines.append("Events:" if events else "Events:        none")
    if events:
        lines.append(
            render.table(
                [["  TYPE", "REASON", "AGE", "MESSAGE"]]
                + [[f"  {e.type}", e.reason, _ago(e.time), e.message] for e in events]
            )
        )
    print("\n".join(lines), file=out)
    return EXIT_OK


def _ago(when: datetime | None) -> str:
    return "-" if when is None else render.duration((datetime.now(UTC) - when).total_seconds())


def cmd_logs(api: CollectJobClient, args: argparse.Namespace, out: TextIO) -> int:
    """The worker's log through the API (`pods/log`); a node without a kubelet API (the
    project's local node) keeps it in a file instead, which is read and named."""
    namespace = _namespace(args)
    api.get(namespace, args.name)  # a clear 404 for a job that does not exist
    pods = api.worker_pods(namespace, args.name)
    if not pods:
        print(
            f"error: CollectJob {namespace}/{args.name} has no worker pod now "
            "(suspended or finished jobs have none)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    pod = pods[0]
    try:
        out.write(api.pod_log(namespace, pod))
        return EXIT_OK
    except CollectJobError as e:  # no kubelet API behind the node: fall back to its log files
        api_error = e.detail
    kubeconfig = Path(args.kubeconfig or "~/.kube/config").expanduser()
    path = (args.node_logs or kubeconfig.parent / "node" / "logs") / f"{namespace}_{pod}.log"
    if not path.is_file():
        print(
            f"error: the API server cannot serve the log of pod {pod} ({api_error}) "
            f"and {path} does not exist; pass --node-logs DIR",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"# {path} (the node serves no log API)", file=sys.stderr)
    out.write(path.read_text(errors="replace"))
    return EXIT_OK


COMMANDS = {
    "get": cmd_get,
    "list": cmd_get,
    "watch": cmd_watch,
    "describe": cmd_describe,
    "logs": cmd_logs,
    **{str(a): cmd_action for a in Action},
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    try:
        api = _client(args)
    except (config.ConfigException, OSError) as e:
        print(f"error: cannot load the kubeconfig: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return COMMANDS[args.command](api, args, out)
    except CollectJobError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        return EXIT_FAILED
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
