#!/usr/bin/env bash
# A real Kubernetes node beside the development control plane: containerd,
# runc, the CNI bridge, the kubelet, kube-proxy, kube-scheduler and kube-router's
# network-policy controller (the firewall that enforces NetworkPolicy).
# scripts/control-plane.sh calls this; it is not meant to be run on its own.
#
#   scripts/node.sh build            build or reuse kubelet, kube-scheduler, kube-proxy, kube-router, the pause image
#   scripts/node.sh install          install containerd, runc, CNI plugins, iptables, ipset, docker.io... (Debian)
#   scripts/node.sh prepare DIR      record the host's state, create the node's bridge
#   scripts/node.sh start DIR        containerd, images, kubelet, kube-proxy, kube-scheduler, kube-router (API up)
#   scripts/node.sh stop DIR KUBECTL stop all of it (pods first, through the kubelet)
#   scripts/node.sh restore DIR      put the host back as `prepare` found it (after the API server stopped)
#
# Needs root. One node per machine: a second `prepare` while a node runs is refused.
# Machine-wide changes, all undone by `stop`: the bridge cmbtask0 (10.88.0.1/16,
# pods only), iptables chains named KUBE-* (kube-proxy's own, removed with
# `kube-proxy --cleanup`; kube-router's KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*
# and its ipsets KUBE-SRC-*, KUBE-DST-*), and the sysctls listed in SYSCTLS, which
# the kubelet and kube-proxy rewrite. Loopback and the default iptables policies
# are never touched.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=k8s/common.sh
source "$HERE/k8s/common.sh"
NODE_BIN_DIR="$CACHE_ROOT/k8s-node-$K8S_VERSION"
NODE_BINARIES=(kubelet kube-scheduler kube-proxy)
KUBE_ROUTER_MOD_DIR="$HERE/k8s/kube-router"
KUBE_ROUTER_VERSION="$(awk '$1 == "require" && $2 == "github.com/cloudnativelabs/kube-router/v2" {print $3}' \
    "$KUBE_ROUTER_MOD_DIR/go.mod")"
KUBE_ROUTER="$CACHE_ROOT/kube-router-$KUBE_ROUTER_VERSION/kube-router"
# what kube-router's firewall owns: its chains in the filter table, its ipsets
KUBE_ROUTER_CHAINS='KUBE-(ROUTER|POD-FW|NWPLCY)-'
KUBE_ROUTER_SETS='^(inet6:)?KUBE-(SRC|DST)-'
SERVICE_CIDR=10.250.0.0/24
PAUSE_IMAGE="cmbtask.local/pause:1"
# Persistent, so that imported images survive a restart of the node.
CONTAINERD_ROOT="$CACHE_ROOT/containerd"
RUN_ROOT="/run/cmbtask-node"
SOCKET="$RUN_ROOT/containerd.sock"
LOCK="$RUN_ROOT/owner"
BRIDGE=cmbtask0
BRIDGE_IP=10.88.0.1
POD_CIDR=10.88.0.0/16
NODE_NAME=cmbtask-node
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
    net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.conf.all.route_localnet)
# the node's runtime, and what builds its pause image and the project's images
PACKAGES=(containerd runc containernetworking-plugins iptables ipset gcc libc6-dev docker.io debootstrap)

log() { echo "node: $*" >&2; }

need_root() {
    [[ "$(id -u)" == 0 ]] || { log "the node needs root (containerd, cgroups, network namespaces)"; exit 1; }
}

# ---- build -------------------------------------------------------------------

have_binaries() {
    local b
    for b in "${NODE_BINARIES[@]}" pause.tar; do
        [[ -s "$NODE_BIN_DIR/$b" ]] || return 1
    done
}


pause_image() {
    # A one-layer image in the `docker save` layout, which `ctr images import` reads.
    local out="$1" work diff config
    work="$(mktemp -d)"
    mkdir -p "$work/root" "$work/image"
    gcc -static -Os -o "$work/root/pause" "$HERE/k8s/pause/pause.c"
    strip "$work/root/pause"
    tar -C "$work/root" --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" pause
    diff="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
    mkdir -p "$work/image/$diff"
    mv "$work/layer.tar" "$work/image/$diff/layer.tar"
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$diff" >"$work/config.json"
    config="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
    mv "$work/config.json" "$work/image/$config.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
        "$config" "$PAUSE_IMAGE" "$diff" >"$work/image/manifest.json"
    tar -C "$work/image" --mtime=@0 --owner=0 --group=0 -cf "$out" .
    rm -rf "$work"
}

build_kube_router() {
    # its own module and cache directory: its version moves apart from Kubernetes'
    [[ -s "$KUBE_ROUTER" ]] && return 0
    local tmp started
    tmp="$(mktemp -d "$CACHE_ROOT/.build-kube-router.XXXXXX")"
    started="$(date +%s)"
    log "building kube-router $KUBE_ROUTER_VERSION into $(dirname "$KUBE_ROUTER")"
    (cd "$KUBE_ROUTER_MOD_DIR" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$tmp/" \
        github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
    mkdir -p "$(dirname "$KUBE_ROUTER")"
    mv -f "$tmp/kube-router" "$KUBE_ROUTER"
    rm -rf "$tmp"
    log "built kube-router in $(($(date +%s) - started)) s"
}

cmd_build() {
    mkdir -p "$CACHE_ROOT"
    if [[ ! -s "$KUBE_ROUTER" ]]; then
        command -v go >/dev/null || { log "go is not installed"; exit 1; }
        build_kube_router
    fi
    if have_binaries; then
        log "reusing cached node binaries in $NODE_BIN_DIR"
        echo "$NODE_BIN_DIR"
        return 0
    fi
    command -v go >/dev/null || { log "go is not installed"; exit 1; }
    local tmp started
    mkdir -p "$CACHE_ROOT"
    tmp="$(mktemp -d "$CACHE_ROOT/.build-node.XXXXXX")"
    started="$(date +%s)"
    log "building kubelet, kube-scheduler and kube-proxy $K8S_VERSION into $NODE_BIN_DIR"
    (cd "$K8S_MOD_DIR" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$(k8s_ldflags)" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
    pause_image "$tmp/pause.tar"
    mkdir -p "$NODE_BIN_DIR"
    local b
    for b in "${NODE_BINARIES[@]}" pause.tar; do
        mv -f "$tmp/$b" "$NODE_BIN_DIR/$b"
    done
    rm -rf "$tmp"
    log "built in $(($(date +%s) - started)) s"
    echo "$NODE_BIN_DIR"
}

cmd_install() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    need_root
    log "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# ---- host state -----------------------------------------------------------------

cmd_prepare() {
    local dir="$1" owner
    need_root
    mkdir -p "$RUN_ROOT" "$dir/node"
    if [[ -f "$LOCK" ]]; then
        owner="$(cat "$LOCK")"
        if [[ "$owner" != "$dir" ]] && [[ -f "$owner/node/kubelet.pid" ]] \
            && kill -0 "$(cat "$owner/node/kubelet.pid")" 2>/dev/null; then
            log "a node already runs on this machine (state in $owner); stop it first"
            exit 1
        fi
    fi
    echo "$dir" >"$LOCK"
    local key
    : >"$dir/node/sysctls"
    for key in "${SYSCTLS[@]}"; do
        sysctl -n "$key" >/dev/null 2>&1 && echo "$key=$(sysctl -n "$key")" >>"$dir/node/sysctls"
    done
    kube_chains >"$dir/node/kube-chains-before"
    kube_router_state >"$dir/node/kube-router-before"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        echo created >"$dir/node/bridge"
    fi
    ip addr replace "$BRIDGE_IP/16" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

CGROUP_ROOT=cmbtask-node

cgroup_dirs() {
    # the v1 hierarchies and the v2 one, where the kubelet puts its pods' cgroups
    awk '$3 ~ /^cgroup2?$/ {print $2}' /proc/self/mounts | sort -u
}

make_cgroups() {
    local base
    for base in $(cgroup_dirs); do mkdir -p "$base/$CGROUP_ROOT"; done
}

remove_cgroups() {
    local base
    for base in $(cgroup_dirs); do
        [[ -d "$base/$CGROUP_ROOT" ]] && find "$base/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

kube_chains() {
    # how many KUBE-* chains the host has (the kubelet's and kube-proxy's)
    { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | grep -c '^:KUBE-' || true
}

kube_router_state() {
    # how many chains and ipsets of kube-router's the host has
    local chains sets
    chains="$({ iptables-save -t filter 2>/dev/null; ip6tables-save -t filter 2>/dev/null; } \
        | grep -cE "^:$KUBE_ROUTER_CHAINS" || true)"
    sets="$({ ipset list -n 2>/dev/null || true; } | grep -cE "$KUBE_ROUTER_SETS" || true)"
    echo "$((chains + sets))"
}

remove_chains() {
    # Every chain whose name matches the pattern, and the built-in chains' jumps to them.
    local pattern="$1" tool table rule chain
    for tool in iptables ip6tables; do
        command -v "$tool" >/dev/null || continue
        for table in filter nat mangle; do
            { "$tool-save" -t "$table" 2>/dev/null | grep -E "^-A [A-Z]+ .*-j $pattern" || true; } \
                | while IFS= read -r rule; do
                    eval "$tool -t $table ${rule/#-A/-D}" 2>/dev/null || true
                done
            for chain in $("$tool-save" -t "$table" 2>/dev/null | awk '{print substr($1, 2)}' | grep -E "^$pattern"); do
                "$tool" -t "$table" -F "$chain" 2>/dev/null || true
            done
            for chain in $("$tool-save" -t "$table" 2>/dev/null | awk '{print substr($1, 2)}' | grep -E "^$pattern"); do
                "$tool" -t "$table" -X "$chain" 2>/dev/null || true
            done
        done
    done
}

remove_kube_chains() {
    # kube-proxy --cleanup takes its own chains away; the kubelet's
    # (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) it leaves.
    remove_chains 'KUBE-'
}

remove_kube_router_state() {
    # Its chains first: an ipset still used by a rule cannot be destroyed.
    local set
    remove_chains "$KUBE_ROUTER_CHAINS"
    command -v ipset >/dev/null || return 0
    for set in $({ ipset list -n 2>/dev/null || true; } | grep -E "$KUBE_ROUTER_SETS"); do
        ipset destroy "$set" 2>/dev/null || log "could not destroy ipset $set"
    done
}

restore_host() {
    local dir="$1" line
    [[ -d "$dir/node" ]] || return 0
    # only when the host had none before: never another cluster's chains
    [[ "$(cat "$dir/node/kube-chains-before" 2>/dev/null)" == 0 ]] && remove_kube_chains
    [[ "$(cat "$dir/node/kube-router-before" 2>/dev/null)" == 0 ]] && remove_kube_router_state
    if [[ -f "$dir/node/sysctls" ]]; then
        while IFS= read -r line; do
            sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"
        done <"$dir/node/sysctls"
    fi
    if [[ -f "$dir/node/bridge" ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link delete "$BRIDGE"
    fi
    [[ -f "$LOCK" && "$(cat "$LOCK")" == "$dir" ]] && rm -f "$LOCK"
    return 0
}

# ---- start ------------------------------------------------------------------------

spawn() {
    local dir="$1" name="$2"
    shift 2
    setsid "$@" >"$dir/node/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/node/$name.pid"
}

wait_until() {
    local what="$1" log_file="$2" deadline=$((SECONDS + START_TIMEOUT_S))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$what not ready after ${START_TIMEOUT_S}s; last log lines:"
            tail -n 30 "$log_file" >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

write_containerd_config() {
    local dir="$1"
    mkdir -p "$dir/node/cni" "$CONTAINERD_ROOT"
    cat >"$dir/node/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$RUN_ROOT/containerd-state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root has no CAP_SYS_RESOURCE here: without this every sandbox fails in runc
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/node/cni"
EOF
    # No ipMasq: pods talk to the host and each other only, so the bridge
    # plugin adds no iptables rules of its own.
    cat >"$dir/node/cni/10-cmbtask.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "cmbtask", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/node/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}
]}
EOF
}

write_kubelet_config() {
    local dir="$1" port="$2" healthz="$3" ca="$4"
    cat >"$dir/node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroups v1 on these machines, and no systemd
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$SOCKET
address: $BRIDGE_IP
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $ca}
authorization: {mode: AlwaysAllow}
failSwapOn: false
maxPods: 500
podPidsLimit: 4096
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# the shared disk is never "under pressure" for a test node; memory stays guarded
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 60s
staticPodPath: ""
EOF
}

write_proxy_config() {
    local dir="$1" kubeconfig="$2" healthz="$3" metrics="$4"
    cat >"$dir/node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$healthz
metricsBindAddress: 127.0.0.1:$metrics
# leave the host's conntrack table and timeouts as they are
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
# no route_localnet sysctl: NodePorts are not served on loopback
iptables: {localhostNodePorts: false, masqueradeAll: true}
EOF
}

ctr_() { ctr --address "$SOCKET" "$@"; }

firewall_ready() {
    iptables-save -t filter | grep -q '^:KUBE-NWPLCY-DEFAULT' \
        && iptables-save -t filter | grep -q -- '-A FORWARD .*-j KUBE-ROUTER-FORWARD'
}

start_firewall() {
    # kube-router's network-policy controller alone: no BGP routing, no IPVS
    # service proxy (kube-proxy has Services), no health or metrics listener.
    # It reads the node's InternalIP, so it starts once the node is registered.
    local dir="$1" kubeconfig="$2"
    spawn "$dir" kube-router "$KUBE_ROUTER" --kubeconfig "$kubeconfig" --hostname-override "$NODE_NAME" \
        --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
        --service-cluster-ip-range "$SERVICE_CIDR" --health-port 0 --metrics-port 0 --v 1
    wait_until "kube-router's firewall" "$dir/node/kube-router.log" firewall_ready
}

cmd_start() {
    local dir="$1" kubectl="$2" started=$SECONDS
    local kubeconfig="$dir/kubeconfig" ca="$dir/pki/ca.crt"
    need_root
    cmd_build >/dev/null
    write_containerd_config "$dir"
    spawn "$dir" containerd containerd --config "$dir/node/containerd.toml"
    wait_until containerd "$dir/node/containerd.log" ctr --address "$SOCKET" version
    ctr_ -n k8s.io images import "$NODE_BIN_DIR/pause.tar" >/dev/null
    bash "$HERE/images.sh" import "$SOCKET" "$CONTAINERD_ROOT/cmbtask-images.ids"

    local port healthz
    port="$(free_port)"
    healthz="$(free_port)"
    write_kubelet_config "$dir" "$port" "$healthz" "$ca"
    make_cgroups
    spawn "$dir" kubelet "$NODE_BIN_DIR/kubelet" --config "$dir/node/kubelet.yaml" --kubeconfig "$kubeconfig" \
        --root-dir "$dir/node/kubelet" --cert-dir "$dir/node/kubelet-pki" --hostname-override "$NODE_NAME" \
        --node-ip "$BRIDGE_IP" --v 1
    write_proxy_config "$dir" "$kubeconfig" "$(free_port)" "$(free_port)"
    spawn "$dir" kube-proxy "$NODE_BIN_DIR/kube-proxy" --config "$dir/node/kube-proxy.yaml" --v 1
    spawn "$dir" kube-scheduler "$NODE_BIN_DIR/kube-scheduler" --kubeconfig "$kubeconfig" \
        --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
        --leader-elect=false --secure-port 0 --v 1
    wait_until "the node to be Ready" "$dir/node/kubelet.log" \
        "$kubectl" --kubeconfig "$kubeconfig" wait --for condition=Ready --timeout 2s "node/$NODE_NAME"
    start_firewall "$dir" "$kubeconfig"
    log "node $NODE_NAME Ready in $((SECONDS - started)) s (state in $dir/node)"
}


# ---- stop --------------------------------------------------------------------------

stop_pid() {
    local file="$1" pid i
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

remove_containers() {
    # The kubelet is gone: end whatever it left running, then the containers.
    local id
    ctr_ version >/dev/null 2>&1 || return 0
    for id in $(ctr_ -n k8s.io tasks ls -q 2>/dev/null); do
        ctr_ -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr_ -n k8s.io tasks ls -q 2>/dev/null); do
        ctr_ -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ -n k8s.io containers ls -q 2>/dev/null); do
        ctr_ -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
}

kill_leftovers() {
    # Containers the kubelet was still creating when it stopped: their shims
    # outlive containerd by design, and their processes sit in the node's cgroups.
    local pid base i
    for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $SOCKET( |\$)" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    for i in 1 2 3; do
        for base in $(cgroup_dirs); do
            [[ -d "$base/$CGROUP_ROOT" ]] || continue
            for pid in $(find "$base/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null || true
            done
        done
        sleep 0.5
    done
}

unmount_under() {
    local root="$1" mnt
    [[ -d "$root" ]] || return 0
    # deepest first
    for mnt in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount -l "$mnt" 2>/dev/null || true
    done
}

cmd_stop() {
    local dir="$1" kubectl="${2:-}"
    [[ -d "$dir/node" ]] || return 0
    if [[ -n "$kubectl" && -f "$dir/node/kubelet.pid" ]] && kill -0 "$(cat "$dir/node/kubelet.pid")" 2>/dev/null; then
        # Let the kubelet take its pods down properly (CNI teardown included).
        "$kubectl" --kubeconfig "$dir/kubeconfig" delete deployments,replicasets,jobs --all -A --wait=false \
            >/dev/null 2>&1 || true
        "$kubectl" --kubeconfig "$dir/kubeconfig" delete pods --all -A --grace-period=1 --timeout=60s \
            >/dev/null 2>&1 || true
    fi
    stop_pid "$dir/node/kube-scheduler.pid"
    if [[ -f "$dir/node/kube-router.pid" ]]; then
        stop_pid "$dir/node/kube-router.pid"
        [[ "$(cat "$dir/node/kube-router-before" 2>/dev/null)" == 0 ]] && remove_kube_router_state
    fi
    stop_pid "$dir/node/kubelet.pid"
    remove_containers
    stop_pid "$dir/node/containerd.pid"
    kill_leftovers
    if [[ -f "$dir/node/kube-proxy.pid" ]]; then
        stop_pid "$dir/node/kube-proxy.pid"
        "$NODE_BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true
    fi
    unmount_under "$dir/node/kubelet"
    unmount_under "$RUN_ROOT/containerd-state"
    unmount_under "$CONTAINERD_ROOT/io.containerd.grpc.v1.cri/sandboxes"
    local ns
    for ns in /run/netns/cni-*; do
        [[ -e "$ns" ]] || continue
        umount "$ns" 2>/dev/null || true
        rm -f "$ns"
    done
    remove_cgroups
    log "stopped node in $dir/node"
}

main() {
    local sub="${1:-}"
    shift || true
    case "$sub" in
        build) cmd_build ;;
        install) cmd_install ;;
        prepare) cmd_prepare "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        restore) restore_host "$@" ;;
        *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
