#!/usr/bin/env bash
# Set up (Python venv + web UI) and start the embedded default: gateway, local
# runners, SQLite and the UI in one process tree. Arguments go to `cmbtask up`,
# e.g. `bash scripts/up.sh --port 8080 --data-dir ~/cmbtask-data`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" run
exec "$ROOT/.venv/bin/cmbtask" up "$@"
