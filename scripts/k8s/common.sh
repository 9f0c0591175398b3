# What scripts/control-plane.sh and scripts/node.sh share: the Kubernetes
# version (from the wrapper module), where builds are cached, and the helpers
# both use. Sourced, never run.

K8S_MOD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kubernetes"
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$K8S_MOD_DIR/go.mod")"
CACHE_ROOT="${CMBTASK_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cmbtask}"
START_TIMEOUT_S="${CMBTASK_K8S_START_TIMEOUT_S:-120}"

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

free_port() {
    # Ask the kernel for a free loopback port; other test runs pick theirs
    # the same way, so nothing here is fixed.
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
