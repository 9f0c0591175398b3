#!/usr/bin/env bash
# Create or update the separate virtualenv that runs the `cmbagent` engine and
# its tests, and print that venv's python path (the last line of stdout).
#
# Why a separate venv: cmbagent declares ~2.3 GB of dependencies (camb, cobaya,
# healpy, streamlit, xgboost, CUDA wheels via xgboost ...). The workflows
# themselves import far fewer, so this script installs cmbagent and its AG2
# fork without their declared dependencies and then exactly the packages they
# import, pinned to versions that were tested together. `pip install
# cmbtask[cmbagent]` still gives the full, declared install for people who
# want every scientific package.
#
# Three releases are supported, one profile each:
#   post30  cmbagent 0.0.1.post30, the newest release installable on Python 3.11
#   post63  cmbagent 0.0.1.post63 (Python >= 3.12), upstream's last release and
#           what the runner image's `cmbagent` extra installs
#   mars    mars-cmbagent 2.2.5 (Python >= 3.12), the maintained line on AG2 itself
#           (it imports as `cmbagent` too); what `scripts/up.sh --cmbagent` runs
#
# Environment:
#   CMBTASK_CMBAGENT_PROFILE post30 | post63 | mars  (default: post30)
#   CMBTASK_CMBAGENT_VENV    venv path            (default: <repo>/.venv-cmbagent, post63: .venv-cmbagent-312,
#                                                  mars: .venv-cmbagent-mars)
#   CMBTASK_CMBAGENT_PYTHON  interpreter to use   (default: pyenv's newest 3.11 / 3.12, else python3.11 / python3.12)
#   CMBTASK_CACHE_DIR        downloads cache      (default: ~/.cache/cmbtask; wheels in cmbagent-wheels/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${CMBTASK_CMBAGENT_PROFILE:-post30}"
CACHE="${CMBTASK_CACHE_DIR:-$HOME/.cache/cmbtask}"
export PIP_CACHE_DIR="$CACHE/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# What `import cmbagent` and the one-shot / planning-control / control /
# human-in-the-loop workflows import in both releases, plus the
# numpy/scipy/matplotlib/pandas stack that LLM-written analysis code expects.
SHARED_DEPS=(
  # anthropic 0.x: the AG2 clients pass arguments (temperature …) that 2.x's Messages.create refuses
  "openai==1.99.9" "anthropic==0.125.0" "tiktoken==0.14.0"
  "pydantic==2.14.4" "jsonschema==4.26.0" "jsonref==1.1.0"
  "diskcache==5.6.3" "docker==7.2.0" "termcolor==3.3.0" "python-dotenv==1.2.4"
  "asyncer==0.0.8" "websocket-client==1.9.2" "requests==2.34.2" "httpx==0.28.1"
  "anyio==4.16.0" "packaging==26.4" "PyYAML==6.0.4" "ruamel.yaml==0.19.1"
  "ipython==9.18.1" "pillow==13.0.0" "google-genai==2.34.0"
  "numpy==2.4.6" "scipy==1.17.1" "pandas==3.1.1" "matplotlib==3.11.2"
  "cobaya==3.6.2" "getdist==1.7.7" "dill==0.4.1" "portalocker==4.4.2"
  "Py-BOBYQA==1.5.0" "RapidFuzz==3.14.6" "tqdm==4.70.1"
)
case "$PROFILE" in
  post30)
    SERIES=3.11
    VENV="${CMBTASK_CMBAGENT_VENV:-$ROOT/.venv-cmbagent}"
    # The library and its AG2 fork, installed without their declared dependencies.
    CORE=("cmbagent==0.0.1.post30" "cmbagent_autogen==0.0.91.post11")
    DEPS=("${SHARED_DEPS[@]}")
    ;;
  post63)
    SERIES=3.12
    VENV="${CMBTASK_CMBAGENT_VENV:-$ROOT/.venv-cmbagent-312}"
    # Same AG2 fork release as post30 (the METADATA asks for >=0.0.91post11).
    CORE=("cmbagent==0.0.1.post63" "cmbagent_autogen==0.0.91.post11")
    # post63 also imports, at `import cmbagent`: mistralai (its OCR helpers;
    # 1.x, whose top-level `Mistral` 2.x and later moved), and through its
    # plot-judging functions camb and yfinance.
    DEPS=("${SHARED_DEPS[@]}" "mistralai==1.9.11" "camb==2.0.5" "yfinance==1.7.0")
    ;;
  mars)
    SERIES=3.12
    VENV="${CMBTASK_CMBAGENT_VENV:-$ROOT/.venv-cmbagent-mars}"
    # The maintained line runs on AG2 itself (it asks for ag2[openai]>=0.10.3):
    # 0.14.0, the last release before AG2 1.0, which came out with mars 2.2.5.
    CORE=("mars-cmbagent==2.2.5" "ag2==0.14.0")
    # Its own set, not SHARED_DEPS: AG2 >= 0.10 wants openai 2.x. What `import
    # cmbagent` and its workflows and utilities import (LiteLLM, boto3,
    # langchain and torch, though declared, load only in paths not used here:
    # Bedrock, external tools, parallel fan-out), AG2's own imports, and the
    # same scientific stack as the other profiles.
    DEPS=(
      # anthropic: AG2 0.14 asks for <1, as for the other profiles.
      "openai==2.54.0" "anthropic==0.125.0" "mistralai==1.9.11" "tiktoken==0.14.0"
      "pydantic==2.14.4" "fast-depends==3.0.9" "httpx==0.28.1" "anyio==4.16.0" "packaging==26.4"
      "PyYAML==6.0.4" "python-dotenv==1.2.4" "termcolor==3.3.0" "requests==2.34.2"
      "structlog==26.1.0" "ruamel.yaml==0.19.1" "jsonref==1.1.0" "ipython==9.18.1" "pillow==13.0.0"
      "jsonschema==4.26.0"  # the tests' OpenAI-compatible server validates structured replies with it
      "numpy==2.4.6" "scipy==1.17.1" "pandas==3.1.1" "matplotlib==3.11.2"
    )
    ;;
  *)
    echo "cmbagent.sh: unknown CMBTASK_CMBAGENT_PROFILE '$PROFILE' (post30, post63 or mars)" >&2
    exit 2
    ;;
esac

pick_python() {
  if [ -n "${CMBTASK_CMBAGENT_PYTHON:-}" ]; then echo "$CMBTASK_CMBAGENT_PYTHON"; return; fi
  local pyenv_py
  pyenv_py=$(ls -d "$HOME"/.pyenv/versions/"$SERIES".*/bin/python"$SERIES" 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$pyenv_py" ]; then echo "$pyenv_py"; return; fi
  command -v "python$SERIES" || { echo "cmbagent.sh: no Python $SERIES for profile $PROFILE" >&2; return 1; }
}

# What the cmbagent tests need besides the project (not all of [dev]: no linters here).
TEST_TOOLS=("pytest>=8" "pytest-asyncio>=0.24" "pytest-timeout>=2.3")

# Skip the network entirely when nothing this script installs has changed.
STAMP="$VENV/.cmbtask-cmbagent.stamp"
WANT=$( (echo "$PROFILE"; cat "${BASH_SOURCE[0]}" "$ROOT/pyproject.toml" "$ROOT"/constraints.txt 2>/dev/null) |
  sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  echo "$VENV/bin/python"
  exit 0
fi

PY=$(pick_python)
mkdir -p "$PIP_CACHE_DIR"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" >&2
fi
PIP=("$VENV/bin/python" -m pip install -q --prefer-binary --no-warn-conflicts)
# The project's own pins, so this venv runs the same gateway and runner as .venv.
CONSTRAINTS=()
[ -f "$ROOT/constraints.txt" ] && CONSTRAINTS=(-c "$ROOT/constraints.txt")
# nice: the install competes with everything else on small machines.
nice -n 10 "${PIP[@]}" "${CONSTRAINTS[@]}" -e "$ROOT" "${TEST_TOOLS[@]}" >&2
# cmbagent and its dependencies come from a wheelhouse in the cache: the index
# serves files that pip's own HTTP cache does not keep, so without it every
# rebuild downloads the same few hundred MB again. A warm wheelhouse installs
# offline; a cold or incomplete one is filled first. Both profiles share it:
# pip picks the wheels whose tags fit the venv's Python.
WHEELS="$CACHE/cmbagent-wheels"
mkdir -p "$WHEELS"
from_wheelhouse() {
  nice -n 10 "${PIP[@]}" --no-index --find-links "$WHEELS" --no-deps "${CORE[@]}" >&2 &&
    nice -n 10 "${PIP[@]}" --no-index --find-links "$WHEELS" "${CONSTRAINTS[@]}" "${DEPS[@]}" >&2
}
if ! from_wheelhouse 2>/dev/null; then
  DOWNLOAD=("$VENV/bin/python" -m pip download -q --prefer-binary -d "$WHEELS")
  nice -n 10 "${DOWNLOAD[@]}" --no-deps "${CORE[@]}" >&2
  nice -n 10 "${DOWNLOAD[@]}" "${CONSTRAINTS[@]}" "${DEPS[@]}" >&2
  from_wheelhouse
fi
# Fail here, not in a test, if an import the workflows need is missing. (Importing
# cmbagent may create ./cmbagent_output, hence the scratch directory.)
CHECK_DIR=$(mktemp -d)
( cd "$CHECK_DIR" && OPENAI_API_KEY=sk-install-check CMBAGENT_DISABLE_DISPLAY=1 \
    "$VENV/bin/python" -c "import cmbagent, cmbagent.functions, cmbtask_runner" >/dev/null ) >&2
rm -rf "$CHECK_DIR"
echo "$WANT" > "$STAMP"
echo "$VENV/bin/python"
