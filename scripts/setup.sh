#!/usr/bin/env bash
# Set cmbtask up on a fresh Debian machine, idempotently.
#
#   bash scripts/setup.sh run     Python venv + web UI: enough for `cmbtask up`
#   bash scripts/setup.sh test    also PostgreSQL, Chromium, HAProxy, helm, the Kubernetes
#                                 control-plane and node (packages, binaries, base
#                                 images) and the cmbagent venvs
#
# Everything expensive is cached under ~/.cache/cmbtask keyed by version, and
# rebuilt when the cache is missing; nothing depends on the cache existing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHAT="${1:-run}"
PYTHON="${CMBTASK_PYTHON:-python3}"

say() { printf '\n== setup: %s (%s)\n' "$*" "$(date +%T)" >&2; }

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

python_env() {
  say "python venv (.venv)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  local stamp
  stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
  if [ "$(cat .venv/.cmbtask-stamp 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,kubernetes]"
    echo "$stamp" > .venv/.cmbtask-stamp
  fi
}

ui() {
  say "web UI (npm ci + vite build)"
  command -v npm >/dev/null || apt_install nodejs npm
  bash scripts/ui.sh >/dev/null
}

python_env
ui
if [ "$WHAT" = "test" ]; then
  say "PostgreSQL server"
  bash scripts/postgres.sh >/dev/null
  say "Chromium (Debian)"
  [ -x /usr/bin/chromium ] || apt_install chromium
  apt_install openssl
  say "HAProxy (Debian): the balancer in front of gateway replicas in the failover tests"
  apt_install haproxy
  say "helm (Go module build, cached)"
  nice -n 5 bash scripts/helm.sh >/dev/null
  say "Kubernetes node packages (containerd, runc, CNI plugins, iptables, docker.io, debootstrap)"
  bash scripts/node.sh install
  say "Kubernetes control-plane and node binaries (Go module build, cached)"
  nice -n 5 bash scripts/control-plane.sh build >/dev/null
  say "local base images for the Dockerfile (debootstrap, cached; the images build at node start)"
  bash scripts/images.sh bases
  say "cmbagent venvs: post30 on Python 3.11, post63 and mars-cmbagent on 3.12 (cached downloads)"
  for profile in post30 post63 mars; do
    CMBTASK_CMBAGENT_PROFILE=$profile nice -n 5 bash scripts/cmbagent.sh >/dev/null
  done
fi
say "done ($WHAT)"
