#!/usr/bin/env bash
# Build `helm` from its Go module through the Go module proxy (no download
# site is reachable from CI), cache it per version under
# ~/.cache/cmbtask/helm-<version>/ and print the binary's path.
# A cached binary is reused as is; the build runs at low priority because the
# machines are small and shared. Override the version with CMBTASK_HELM_VERSION.
set -euo pipefail
VERSION="${CMBTASK_HELM_VERSION:-v3.22.0}"
CACHE="${CMBTASK_CACHE_DIR:-$HOME/.cache/cmbtask}/helm-$VERSION"
BIN="$CACHE/bin/helm"
if [ -x "$BIN" ] && "$BIN" version --short >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "helm.sh: the go toolchain is needed to build helm" >&2; exit 1; }
mkdir -p "$CACHE/bin"
# Build into a temporary directory and move into place last, so that an
# interrupted build never leaves a half-written binary that looks cached.
TMP=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# -trimpath and CGO off: a static, reproducible binary that needs no C compiler.
CGO_ENABLED=0 GOBIN="$TMP" GOFLAGS="${GOFLAGS:--buildvcs=false}" \
  nice -n 10 go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION" \
  "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
mv "$TMP/helm" "$BIN"
"$BIN" version --short >/dev/null
echo "$BIN"
