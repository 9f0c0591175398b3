#!/usr/bin/env bash
# Set up (Python venv + web UI) and start the embedded default: gateway, local
# runners, SQLite and the UI in one process tree. Arguments go to `cmbtask up`,
# e.g. `bash scripts/up.sh --port 8080 --data-dir ~/cmbtask-data`.
#
#   bash scripts/up.sh --cmbagent [PROFILE] [cmbtask up arguments]
#
# also builds the CMBAgent venv of PROFILE (mars, post63 or post30; default
# mars, see scripts/cmbagent.sh) and runs the local runners on it, so the
# cmbagent engine runs real workflows. The runners take their provider keys
# from this environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY;
# MISTRAL_API_KEY for OCR) — whoever starts the embedded gateway is its admin,
# so the gateway's own keys are its runners' fallback here — or from the keys
# each user stores (`cmbtask keys set openai`, the Settings page); without any
# the gateway starts anyway and says which to set, and the demo engine still
# runs every mode.
#
# CMBTASK_UP_DRY_RUN=1 prints the command and runner command instead of
# starting them (the tests use it); CMBTASK_SKIP_SETUP=1 skips setup.sh run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEY_VARIABLES=(OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY)

PROFILE=""
if [ "${1:-}" = "--cmbagent" ]; then
  shift
  PROFILE=mars
  case "${1:-}" in
    post30 | post63 | mars) PROFILE=$1; shift ;;
    -* | "") ;;
    *)
      echo "up.sh: unknown CMBAgent profile '$1' (mars, post63 or post30)" >&2
      exit 2
      ;;
  esac
fi

[ "${CMBTASK_SKIP_SETUP:-}" = 1 ] || bash "$ROOT/scripts/setup.sh" run

if [ -n "$PROFILE" ]; then
  echo "up.sh: building the CMBAgent venv ($PROFILE); the first time takes a few minutes" >&2
  PY=$(CMBTASK_CMBAGENT_PROFILE="$PROFILE" bash "${CMBTASK_CMBAGENT_SH:-$ROOT/scripts/cmbagent.sh}" | tail -n 1)
  [ -x "$PY" ] || { echo "up.sh: the CMBAgent venv did not build (got '$PY')" >&2; exit 1; }
  export CMBTASK_EXECUTOR=local
  export CMBTASK_PROVIDER_KEYS_FALLBACK="${CMBTASK_PROVIDER_KEYS_FALLBACK:-true}"
  export CMBTASK_RUNNER_COMMAND="[\"$PY\", \"-m\", \"cmbtask_runner\"]"
  have_key=""
  for variable in "${KEY_VARIABLES[@]}"; do
    [ -n "${!variable:-}" ] && have_key=1
  done
  if [ -z "$have_key" ]; then
    cat >&2 <<EOF
up.sh: no LLM provider key is set, so the cmbagent engine cannot run yet.
       Set one and start again, e.g.
         export OPENAI_API_KEY=sk-...        (or ANTHROPIC_API_KEY / GEMINI_API_KEY)
         bash scripts/up.sh --cmbagent $PROFILE
       or store your own once the gateway runs: .venv/bin/cmbtask keys set openai
       Until then the demo engine runs every mode, and /api/modes says what is missing.
EOF
  fi
fi

if [ "${CMBTASK_UP_DRY_RUN:-}" = 1 ]; then
  echo "CMBTASK_RUNNER_COMMAND=${CMBTASK_RUNNER_COMMAND:-}"
  echo "CMBTASK_PROVIDER_KEYS_FALLBACK=${CMBTASK_PROVIDER_KEYS_FALLBACK:-}"
  echo "exec $ROOT/.venv/bin/cmbtask up $*"
  exit 0
fi
exec "$ROOT/.venv/bin/cmbtask" up "$@"
