#!/usr/bin/env bash
# Development Kubernetes control plane for the cmbtask e2e suite and benchmarks.
#
# There is no kubelet and no container runtime here: this runs etcd,
# kube-apiserver and kube-controller-manager (for owner-reference garbage
# collection) on loopback, and the e2e suite brings its own node agent.
#
#   scripts/control-plane.sh build          build or reuse the cached binaries; prints their directory
#   scripts/control-plane.sh start [DIR]    start on free loopback ports; prints `export` lines to eval
#   scripts/control-plane.sh stop  [DIR]    stop what `start` started in DIR
#   scripts/control-plane.sh env   [DIR]    print the `export` lines again
#
# The binaries are built from the Go module proxy through the wrapper modules in
# scripts/k8s/ (k8s.io/kubernetes with every staging module pinned to its
# published v0.X.Y, and go.etcd.io/etcd/server/v3), and cached under
# ~/.cache/cmbtask/k8s-<version>-etcd-<version>/. The cache is only a cache:
# when it is missing or incomplete the build runs again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_MOD_DIR="$HERE/k8s/kubernetes"
ETCD_MOD_DIR="$HERE/k8s/etcd"
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$K8S_MOD_DIR/go.mod")"
ETCD_VERSION="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$ETCD_MOD_DIR/go.mod")"
CACHE_ROOT="${CMBTASK_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cmbtask}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)
DEFAULT_RUN_DIR="${CMBTASK_K8S_RUN_DIR:-/tmp/cmbtask-control-plane}"
START_TIMEOUT_S="${CMBTASK_K8S_START_TIMEOUT_S:-120}"

log() { echo "control-plane: $*" >&2; }

have_binaries() {
    local b
    for b in "${BINARIES[@]}"; do
        [[ -x "$BIN_DIR/$b" ]] || return 1
    done
}

k8s_ldflags() {
    # Without these the binaries report v0.0.0 and kubectl warns about skew.
    local minor pkg flags=""
    minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "-s -w$flags"
}

cmd_build() {
    if have_binaries; then
        log "reusing cached binaries in $BIN_DIR"
        echo "$BIN_DIR"
        return 0
    fi
    command -v go >/dev/null || { log "go is not installed"; exit 1; }
    local tmp started
    mkdir -p "$CACHE_ROOT"
    tmp="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
    started="$(date +%s)"
    log "building kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $BIN_DIR (this takes a while)"
    (cd "$ETCD_MOD_DIR" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" \
        -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    (cd "$K8S_MOD_DIR" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$(k8s_ldflags)" \
        -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl)
    mkdir -p "$BIN_DIR"
    local b
    for b in "${BINARIES[@]}"; do
        mv -f "$tmp/$b" "$BIN_DIR/$b"
    done
    rmdir "$tmp" 2>/dev/null || rm -rf "$tmp"
    log "built in $(($(date +%s) - started)) s"
    echo "$BIN_DIR"
}

main() {
    local sub="${1:-}"
    shift || true
    case "$sub" in
        build) cmd_build ;;
        *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
