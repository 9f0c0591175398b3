#!/usr/bin/env bash
# Install the web UI's Node packages and build it into ui/dist, which the
# gateway serves at / (CMBTASK_UI_DIR defaults to ui/dist).
#
#   bash scripts/ui.sh           npm ci + npm run build
#   bash scripts/ui.sh --check   also: protocol types drift check, unit tests
#   bash scripts/ui.sh --e2e     also: browser end-to-end tests (needs /usr/bin/chromium
#                                and the project installed in .venv)
#
# Needs Node >= 20 and npm. Never downloads a browser: the e2e tests drive
# Debian's Chromium (apt-get install -y chromium).
set -euo pipefail
cd "$(dirname "$0")/../ui"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export npm_config_fund=false npm_config_audit=false

# Vite 8 and jsdom need Node 20.19+ (Debian 12's own nodejs is 18: use NodeSource or nvm).
node -e 'const [a, b] = process.versions.node.split(".").map(Number);
  if (!(a > 22 || (a === 22 && b >= 13) || (a === 20 && b >= 19))) {
    console.error(`ui: Node ${process.versions.node} is too old; need ^20.19 or >=22.13`); process.exit(1); }'

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-progress
fi
npm run build
echo "ui: built $(pwd)/dist"

for arg in "$@"; do
  case "$arg" in
    --check)
      npm run check:types
      npm run check:format
      npm test
      ;;
    --e2e)
      if [[ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]]; then
        # Debian's Chromium; Playwright's own browser download is never used.
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
      fi
      npm run e2e
      ;;
    *)
      echo "unknown option: $arg" >&2
      exit 2
      ;;
  esac
done
