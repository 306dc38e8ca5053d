#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd
# from the Go module proxy into a cache keyed by version. Rebuilds only what is missing.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${COLLECTJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/collectjob}"
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "build-binaries: '$1' is missing. $2" >&2; exit 1; }
}
need go "Install Go 1.25 or newer (https://go.dev/doc/install, or Debian's golang-go)."

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing=0
for b in "${K8S_CMDS[@]}" etcd; do [ -x "$BIN/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"

build_k8s() {
  local dir="$CACHE/src/k8s-$K8S_VERSION"
  mkdir -p "$dir" && cd "$dir"
  echo ">> resolving k8s.io/kubernetes@$K8S_VERSION and its staging modules" >&2
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  {
    echo "module collectjob.local/k8s-binaries"
    echo "go 1.25"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for m in $(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod" | sort -u); do
      echo "replace $m => $m $staging_version"
    done
    for c in "${K8S_CMDS[@]}"; do echo "tool k8s.io/kubernetes/cmd/$c"; done
  } > go.mod
  go mod tidy >&2
  local v="k8s.io/component-base/version" cv="k8s.io/client-go/pkg/version"
  local ld="-s -w"
  for p in "$v" "$cv"; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo ">> building ${K8S_CMDS[*]} (several minutes on 2 cores)" >&2
  local pkgs=()
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  go build -trimpath -ldflags "$ld" -o "$BIN/" "${pkgs[@]}" >&2
}

build_etcd() {
  local dir="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$dir" && cd "$dir"
  echo ">> building etcd $ETCD_VERSION" >&2
  printf 'module collectjob.local/etcd-binary\ngo 1.25\nrequire go.etcd.io/etcd/server/v3 %s\ntool go.etcd.io/etcd/server/v3\n' "$ETCD_VERSION" > go.mod
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2
}

start=$(date +%s)
[ -x "$BIN/etcd" ] || build_etcd
for c in "${K8S_CMDS[@]}"; do [ -x "$BIN/$c" ] || { build_k8s; break; }; done
echo ">> binaries ready in $BIN after $(( $(date +%s) - start ))s" >&2
echo "$BIN"
