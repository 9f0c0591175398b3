#!/usr/bin/env bash
# The test command: sets up what the tests need, then runs every suite, fast
# ones first. Any failing stage fails the run; a pytest stage that collects no
# test fails too (pytest's exit 5 is not a pass here).
#
#   bash scripts/test.sh            everything
#   bash scripts/test.sh STAGE...   only these stages (see the list at the end)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONDONTWRITEBYTECODE=1 CMBTASK_LOG_FORMAT=json

say() { printf '\n== test: %s (%s)\n' "$*" "$(date +%T)" >&2; }

pytest_() {
  local code=0
  "$PYTEST" -p no:cacheprovider "$@" || code=$?
  if [ "$code" -eq 5 ]; then echo "pytest collected no tests for: $*" >&2; return 1; fi
  return "$code"
}

stage_lint() {
  say "lint: ruff, mypy --strict, import contracts"
  pytest_ -q tests/test_quality.py
}

stage_python() {
  say "python: protocol, gateway, runner, operator units, deploy (SQLite + PostgreSQL)"
  pytest_ -q -m "not k8s and not cmbagent" tests
}

stage_ui() {
  say "ui: type drift, unit tests, browser end-to-end in Debian's Chromium"
  bash scripts/ui.sh --check --e2e
}

stage_k8s() {
  say "kubernetes: a real one-node cluster, the images built from the Dockerfile, helm install"
  local run_dir code=0
  run_dir=$(mktemp -d /tmp/cmbtask-cp.XXXXXX)
  # Stopped on every path: under set -e a failing command would leave before a
  # RETURN trap runs, and a cluster left behind holds the node's ports and bridge.
  eval "$(bash scripts/control-plane.sh start "$run_dir")" || code=$?
  [ "$code" -eq 0 ] && { pytest_ -q -m k8s tests || code=$?; }
  bash scripts/control-plane.sh stop "$run_dir" >/dev/null 2>&1 || true
  return "$code"
}

stage_cmbagent() {
  # Every supported release, each in its own venv (scripts/cmbagent.sh):
  # post30 on Python 3.11, post63 and mars on 3.12. CMBTASK_CMBAGENT_PROFILES picks fewer.
  local profile python code
  for profile in ${CMBTASK_CMBAGENT_PROFILES:-post30 post63 mars}; do
    say "cmbagent engine ($profile) against the OpenAI-compatible test server"
    python=$(CMBTASK_CMBAGENT_PROFILE="$profile" bash scripts/cmbagent.sh | tail -n 1)
    code=0
    "$python" -m pytest -p no:cacheprovider -q -m cmbagent tests/cmbagent || code=$?
    [ "$code" -eq 5 ] && { echo "no cmbagent tests collected ($profile)" >&2; return 1; }
    [ "$code" -eq 0 ] || return "$code"
  done
}

if [ "${CMBTASK_SKIP_SETUP:-}" != "1" ]; then
  bash scripts/setup.sh test
fi
PYTEST="$ROOT/.venv/bin/pytest"
CMBTASK_TEST_PG_URL="$(bash scripts/postgres.sh)"
CMBTASK_HELM="$(bash scripts/helm.sh)"
export CMBTASK_TEST_PG_URL CMBTASK_HELM
export CMBTASK_TEST_DBS="${CMBTASK_TEST_DBS:-sqlite,postgresql}"

STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(lint python ui k8s cmbagent)
for stage in "${STAGES[@]}"; do "stage_$stage"; done
say "all stages passed: ${STAGES[*]}"
