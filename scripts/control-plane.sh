#!/usr/bin/env bash
# Development Kubernetes cluster for the cmbtask e2e suite and benchmarks: a
# control plane and one real node.
#
# This runs etcd, kube-apiserver and kube-controller-manager, and through
# scripts/node.sh one node: containerd with runc, the CNI bridge plugin, the
# kubelet, kube-proxy and kube-scheduler, with the project's images (built
# from the root Dockerfile by scripts/images.sh) in its image store. The API
# server listens on the node's bridge address (10.88.0.1), which pods reach
# and no other machine does. Needs root.
#
#   scripts/control-plane.sh build          build or reuse the cached binaries; prints their directory
#   scripts/control-plane.sh start [DIR]    start on free ports; prints `export` lines to eval
#   scripts/control-plane.sh stop  [DIR]    stop what `start` started in DIR, restore the host
#   scripts/control-plane.sh env   [DIR]    print the `export` lines again
#
# The binaries are built from the Go module proxy through the wrapper modules in
# scripts/k8s/ (k8s.io/kubernetes with every staging module pinned to its
# published v0.X.Y, and go.etcd.io/etcd/server/v3), and cached under
# ~/.cache/cmbtask/k8s-<version>-etcd-<version>/ and k8s-node-<version>/. The
# cache is only a cache: when it is missing or incomplete the build runs again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=k8s/common.sh
source "$HERE/k8s/common.sh"
ETCD_MOD_DIR="$HERE/k8s/etcd"
ETCD_VERSION="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$ETCD_MOD_DIR/go.mod")"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)
DEFAULT_RUN_DIR="${CMBTASK_K8S_RUN_DIR:-/tmp/cmbtask-control-plane}"
NODE="$HERE/node.sh"
CONTROLLERS=garbage-collector-controller,serviceaccount-controller,namespace-controller
CONTROLLERS+=,root-ca-certificate-publisher-controller,node-lifecycle-controller,deployment-controller
CONTROLLERS+=,replicaset-controller,endpoints-controller,endpointslice-controller
CONTROLLERS+=,persistentvolume-binder-controller,persistentvolume-protection-controller
CONTROLLERS+=,persistentvolumeclaim-protection-controller,pod-garbage-collector-controller
# The node's bridge address (scripts/node.sh), and the first address of the
# Service range, where pods find the API server as the `kubernetes` Service.
LISTEN_IP=10.88.0.1
SERVICE_IP=10.250.0.1

log() { echo "control-plane: $*" >&2; }

have_binaries() {
    local b
    for b in "${BINARIES[@]}"; do
        [[ -x "$BIN_DIR/$b" ]] || return 1
    done
}


cmd_build() {
    bash "$NODE" build >/dev/null
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


make_pki() {
    local dir="$1"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=cmbtask-dev-ca" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$dir/apiserver.key" -out "$dir/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
        "$LISTEN_IP" "$SERVICE_IP" >"$dir/san.ext"
    openssl x509 -req -in "$dir/apiserver.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 30 -extfile "$dir/san.ext" -out "$dir/apiserver.crt" 2>/dev/null
    # The API server's client certificate for the kubelet (`kubectl logs`, `exec`).
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
        -keyout "$dir/kubelet-client.key" -out "$dir/kubelet-client.csr" 2>/dev/null
    openssl x509 -req -in "$dir/kubelet-client.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 30 -out "$dir/kubelet-client.crt" 2>/dev/null
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
}

write_kubeconfig() {
    local path="$1" server="$2" token="$3" ca="$4"
    {
        echo "apiVersion: v1"
        echo "kind: Config"
        echo "clusters:"
        echo "- name: cmbtask-dev"
        echo "  cluster:"
        echo "    server: $server"
        echo "    certificate-authority-data: $(base64 -w0 <"$ca")"
        echo "users:"
        echo "- name: admin"
        echo "  user:"
        echo "    token: $token"
        echo "contexts:"
        echo "- name: cmbtask-dev"
        echo "  context:"
        echo "    cluster: cmbtask-dev"
        echo "    user: admin"
        echo "    namespace: default"
        echo "current-context: cmbtask-dev"
    } >"$path"
    chmod 600 "$path"
}

spawn() {
    # Detached from the caller's terminal and process group, logs to a file,
    # pid recorded so that `stop` ends exactly what `start` began.
    local dir="$1" name="$2"
    shift 2
    setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

wait_ready() {
    local dir="$1" what="$2" url="$3" deadline=$((SECONDS + START_TIMEOUT_S))
    shift 3
    until curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$what not ready after ${START_TIMEOUT_S}s; last log lines:"
            tail -n 20 "$dir/$what.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

is_running() {
    local dir="$1" name
    for name in etcd kube-apiserver kube-controller-manager node/kubelet; do
        [[ -f "$dir/$name.pid" ]] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || return 1
    done
}

cmd_env() {
    local dir="${1:-$DEFAULT_RUN_DIR}"
    [[ -f "$dir/kubeconfig" ]] || { log "no control plane in $dir"; exit 1; }
    echo "export KUBECONFIG=$dir/kubeconfig"
    echo "export CMBTASK_KUBECTL=$BIN_DIR/kubectl"
    echo "export CMBTASK_K8S_RUN_DIR=$dir"
    echo "export CMBTASK_K8S_SERVER=$(cat "$dir/server")"
}

wait_default_service_account() {
    local dir="$1" deadline=$((SECONDS + START_TIMEOUT_S))
    until "$BIN_DIR/kubectl" --kubeconfig "$dir/kubeconfig" get serviceaccount default >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "controller-manager made no default ServiceAccount; last log lines:"
            tail -n 20 "$dir/kube-controller-manager.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

cmd_start() {
    local dir="${1:-$DEFAULT_RUN_DIR}"
    if is_running "$dir"; then
        log "already running in $dir"
        cmd_env "$dir"
        return 0
    fi
    cmd_stop "$dir" >/dev/null 2>&1 || true
    bash "$NODE" install
    cmd_build >/dev/null
    rm -rf "$dir"
    mkdir -p "$dir/pki" "$dir/etcd"
    chmod 700 "$dir"
    local started=$SECONDS
    bash "$NODE" prepare "$dir"
    make_pki "$dir/pki"

    local etcd_port peer_port api_port token server
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    api_port="$(free_port)"
    token="$(openssl rand -hex 24)"
    server="https://$LISTEN_IP:$api_port"
    echo "$token,admin,admin,system:masters" >"$dir/pki/tokens.csv"
    echo "$server" >"$dir/server"

    # --unsafe-no-fsync: throwaway test data; fsync on a shared disk makes
    # every write wait for everyone else's I/O.
    spawn "$dir" etcd "$BIN_DIR/etcd" --name dev --data-dir "$dir/etcd" --log-level warn \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "dev=http://127.0.0.1:$peer_port" --unsafe-no-fsync
    wait_ready "$dir" etcd "http://127.0.0.1:$etcd_port/health"

    spawn "$dir" kube-apiserver "$BIN_DIR/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address "$LISTEN_IP" --advertise-address "$LISTEN_IP" \
        --secure-port "$api_port" --tls-cert-file "$dir/pki/apiserver.crt" \
        --tls-private-key-file "$dir/pki/apiserver.key" --client-ca-file "$dir/pki/ca.crt" \
        --token-auth-file "$dir/pki/tokens.csv" --authorization-mode RBAC \
        --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$dir/pki/sa.pub" \
        --service-account-signing-key-file "$dir/pki/sa.key" --service-cluster-ip-range 10.250.0.0/24 \
        --kubelet-client-certificate "$dir/pki/kubelet-client.crt" --kubelet-client-key "$dir/pki/kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP --profiling=false --v 1 \
        --feature-gates MutatingAdmissionPolicy=true --runtime-config admissionregistration.k8s.io/v1beta1=true
    wait_ready "$dir" kube-apiserver "$server/readyz" --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token"
    write_kubeconfig "$dir/kubeconfig" "$server" "$token" "$dir/pki/ca.crt"

    # The controllers a one-node cluster needs: owner-reference garbage
    # collection, the default ServiceAccount, namespace cleanup, the
    # kube-root-ca.crt ConfigMap every pod mounts, the node lifecycle
    # controller (it lifts the node's not-ready taint; there is no taint
    # eviction), Deployments, Endpoints for Services, and PersistentVolume binding.
    spawn "$dir" kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig "$dir/kubeconfig" --authentication-kubeconfig "$dir/kubeconfig" \
        --authorization-kubeconfig "$dir/kubeconfig" --leader-elect=false --secure-port 0 \
        --controllers "$CONTROLLERS" --root-ca-file "$dir/pki/ca.crt" \
        --use-service-account-credentials=false --profiling=false --v 1
    wait_default_service_account "$dir"
    log "control plane up at $server (state in $dir)"
    bash "$NODE" start "$dir" "$BIN_DIR/kubectl"
    log "cluster up in $((SECONDS - started)) s"
    cmd_env "$dir"
}

cmd_stop() {
    local dir="${1:-$DEFAULT_RUN_DIR}" name pid i
    bash "$NODE" stop "$dir" "$BIN_DIR/kubectl" || log "node stop reported an error"
    for name in kube-controller-manager kube-apiserver etcd; do
        [[ -f "$dir/$name.pid" ]] || continue
        pid="$(cat "$dir/$name.pid")"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$dir/$name.pid"
    done
    bash "$NODE" restore "$dir"
    log "stopped control plane in $dir"
}

main() {
    local sub="${1:-}"
    shift || true
    case "$sub" in
        build) cmd_build ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        env) cmd_env "$@" ;;
        *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
