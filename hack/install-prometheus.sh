#!/usr/bin/env bash
# Installs Debian's `prometheus` package (the server and promtool) for the monitoring tests.
# Does nothing when both are already on PATH. The tests start their own Prometheus on
# loopback, so the package's service must not run: a temporary policy-rc.d keeps the
# package's postinst from starting it, and one it started anyway is stopped again.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi

if [ "$EUID" != 0 ]; then
  echo "install-prometheus: prometheus/promtool are missing and this is not root." >&2
  echo "Run: sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends prometheus" >&2
  exit 1
fi

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# The package's own service listens on every interface (:9090); it must not be left running.
PIDFILE=/run/prometheus/prometheus.pid
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "install-prometheus: stopping the prometheus service the package started" >&2
  if [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null || kill "$(cat "$PIDFILE")"
  else
    kill "$(cat "$PIDFILE")"
  fi
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null || {
  echo "install-prometheus: the prometheus package installed but prometheus/promtool are not on PATH" >&2
  exit 1
}
