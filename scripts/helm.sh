#!/usr/bin/env bash
# Build `helm` from its Go module through the Go module proxy (no download
# site is reachable from CI), cache it per version under
# ~/.cache/cmbtask/helm-<version>/ and print the binary's path.
# A cached binary is reused when it was built by this same recipe; the build
# runs at low priority because the machines are small and shared.
# Override the version with CMBTASK_HELM_VERSION.
set -euo pipefail
VERSION="${CMBTASK_HELM_VERSION:-v3.22.0}"
CACHE="${CMBTASK_CACHE_DIR:-$HOME/.cache/cmbtask}/helm-$VERSION"
BIN="$CACHE/bin/helm"
# Bump when the build below changes, so that older cached binaries are rebuilt.
RECIPE="2"
if [ -x "$BIN" ] && [ "$(cat "$CACHE/bin/.recipe" 2>/dev/null)" = "$RECIPE" ] \
  && "$BIN" version --short >/dev/null 2>&1; then
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

# Helm's Makefile stamps the Kubernetes version its client libraries speak
# (client-go v0.X.Y -> 1.X); without it `helm template` and `helm lint`
# pretend to talk to Kubernetes 1.20.
GOMOD=$(go mod download -json "helm.sh/helm/v3@$VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
K8S_MINOR=$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]}' "$GOMOD")
[ -n "$K8S_MINOR" ] || { echo "helm.sh: no k8s.io/client-go version in $GOMOD" >&2; exit 1; }
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  LDFLAGS="$LDFLAGS -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
done

# -trimpath and CGO off: a static, reproducible binary that needs no C compiler.
CGO_ENABLED=0 GOBIN="$TMP" GOFLAGS="${GOFLAGS:--buildvcs=false}" \
  nice -n 10 go install -trimpath -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
mv "$TMP/helm" "$BIN"
echo "$RECIPE" >"$CACHE/bin/.recipe"
"$BIN" version --short >/dev/null
echo "$BIN"
