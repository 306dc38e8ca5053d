#!/usr/bin/env bash
# The real browser for the console's tests: Chromium and its driver from Debian's packages.
# Idempotent: does nothing when both are already installed.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium and chromium-driver are missing: run as root, or apt-get install them" >&2
    exit 1
fi
apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    chromium chromium-driver >/dev/null
chromium --version 2>/dev/null || true
