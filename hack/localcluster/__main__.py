"""`python -m localcluster up|down|status|demo` (the Makefile's cluster targets)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from localcluster.controlplane import ControlPlane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "demo"])
    args = parser.parse_args(argv)
    plane = ControlPlane()
    if args.command == "down":
        plane.down()
        print("local cluster stopped and its state removed")
        return 0
    if args.command == "status":
        running = plane.running()
        print("running" if running else "not running")
        return 0 if running else 1
    seconds = plane.ensure_up()
    kubectl = [str(plane.paths.kubectl), f"--kubeconfig={plane.paths.kubeconfig}"]
    print(f"local cluster ready in {seconds:.1f}s at {plane.server}")
    print(f"kubeconfig: {plane.paths.kubeconfig}\nkubectl:    {plane.paths.kubectl}")
    subprocess.run([*kubectl, "get", "nodes", "-o", "wide"], check=True)
    if args.command == "demo":
        from localcluster.demo import run_demo

        return run_demo(plane)
    return 0


if __name__ == "__main__":
    sys.exit(main())
