#!/usr/bin/env bash
# The Debian packages `make image` and the container runtime of the local node need:
# buildah (builds), podman + runc (runs; crun cannot run containers on hybrid-cgroup hosts),
# debootstrap (the base root filesystem), skopeo/umoci (OCI archives), fuse-overlayfs.
# Idempotent: prints nothing and exits 0 when everything is already installed.
set -euo pipefail
packages=(buildah podman runc debootstrap skopeo umoci fuse-overlayfs)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo ">> installing ${missing[*]}" >&2
# Other apt users may hold the lock: wait for it rather than fail.
apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends "${missing[@]}" >&2
