# syntax=docker/dockerfile:1.7
# cmbtask container images: one file, one target per component.
#
#   docker build --target gateway  -t cmbtask/gateway:0.1.0  .
#   docker build --target operator -t cmbtask/operator:0.1.0 .
#   docker build --target runner   -t cmbtask/runner:0.1.0   .
#   docker build --target runner --build-arg CMBAGENT=1 -t cmbtask/runner:0.1.0-cmbagent .
#
# The two bases are build arguments whose defaults are the pinned upstream
# images; scripts/images.sh passes local equivalents where nothing can be
# pulled (charts/cmbtask/README.md says what each build contains).
#
# Why a target per component rather than one image with three entry points:
# the runner image is pulled for every task pod and is the one that may carry
# the large CMBAgent extra, which the gateway and the operator never use, and
# only the gateway serves the built UI. Separate targets keep each image (and
# what an attacker finds in it) to what that component runs, while all of
# them share the same build stages and the same pinned base.
#
# Rules that tests/deploy/test_dockerfile.py checks:
# - base images pinned by exact tag and digest (the build arguments' defaults);
# - the final stages (gateway, operator, runner) have no RUN step at all, so
#   no compiler, package manager step or build cache reaches them, and they
#   run as the numeric non-root user 10001 (Kubernetes can verify a number);
# - every RUN uses only relative paths and variables.

ARG NODE_IMAGE=node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- the web UI, built once, served by the gateway --------------------------
FROM ${NODE_IMAGE} AS ui
WORKDIR /src/ui
# The lock file first: the dependency layer stays cached while sources change.
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

# ---- the Python runtime every final stage starts from -------------------------
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/cmbtask \
    PATH=/opt/cmbtask/bin:$PATH \
    HOME=/tmp

# ---- the project's sources and an empty virtual environment -------------------
FROM python-base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# An empty directory for the gateway's data, handed to the non-root user below.
WORKDIR /var/lib/cmbtask
WORKDIR /src
# constraints.txt pins every dependency to the versions the test suite ran with.
COPY pyproject.toml constraints.txt ./
COPY protocol/ protocol/
COPY gateway/ gateway/
COPY runner/ runner/
COPY operator/ operator/
COPY migrations/ migrations/
RUN python -m venv "$VIRTUAL_ENV"

# ---- gateway and operator: the project with the Kubernetes client ------------
FROM build AS server-venv
# The project itself: its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN "$VIRTUAL_ENV/bin/pip" install --no-cache-dir -c constraints.txt ".[kubernetes]"

# ---- runner: the project, and CMBAgent when CMBAGENT is set to anything -------
FROM build AS runner-venv
# constraints.txt pins what the test suite runs; within those pins pip
# backtracks for many minutes over CMBAgent's large dependency tree, so that
# variant resolves its declared dependencies freely, as
# `pip install cmbtask[cmbagent]` does (a dry run resolves in about 3 minutes).
ARG CMBAGENT=""
# hadolint ignore=DL3013
RUN if [ -n "$CMBAGENT" ]; then \
      "$VIRTUAL_ENV/bin/pip" install --no-cache-dir ".[cmbagent]"; \
    else \
      "$VIRTUAL_ENV/bin/pip" install --no-cache-dir -c constraints.txt .; \
    fi

# ---- final: runner (one pod per task, started by the operator) ---------------
FROM python-base AS runner
COPY --from=runner-venv /opt/cmbtask /opt/cmbtask
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "cmbtask_runner"]

# ---- final: operator (kopf; turns CmbTask objects into runner pods) ----------
FROM python-base AS operator
COPY --from=server-venv /opt/cmbtask /opt/cmbtask
# kopf names its peer identity after the login name, and user 10001 has no
# passwd entry: without this the operator dies at start (getpwuid fails).
ENV USER=cmbtask
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "cmbtask_operator"]

# ---- final: gateway (REST, WebSockets, UI); the default target ---------------
FROM python-base AS gateway
COPY --from=server-venv /opt/cmbtask /opt/cmbtask
COPY --from=ui /src/ui/dist /opt/cmbtask-ui
COPY --from=build --chown=10001:10001 /var/lib/cmbtask /var/lib/cmbtask
ENV CMBTASK_UI_DIR=/opt/cmbtask-ui \
    CMBTASK_DATA_DIR=/var/lib/cmbtask \
    CMBTASK_HOST=0.0.0.0 \
    CMBTASK_PORT=8000 \
    CMBTASK_LOG_FORMAT=json \
    CMBTASK_EXECUTOR=kubernetes
USER 10001:10001
WORKDIR /var/lib/cmbtask
EXPOSE 8000
ENTRYPOINT ["cmbtask"]
CMD ["gateway"]
