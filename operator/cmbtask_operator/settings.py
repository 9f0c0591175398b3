"""Operator settings, from ``CMBTASK_OPERATOR_*`` environment variables.

They supply what a ``CmbTask`` leaves unset (image, resources, gateway URL,
TTL) and the operator's own behaviour (peering, how long to wait for a
Secret). One frozen object, built once at start and passed to the pure
builders, so that tests construct it directly.
"""

from __future__ import annotations

import random
from typing import Any

from cmbtask_protocol import ENV_TRACEPARENT, PROVIDER_KEY_VARIABLES
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OperatorSettings"]


def _random_priority() -> int:
    # kopf pauses every operator that shares the highest priority, so two
    # replicas must differ; a random default keeps a plain Deployment safe.
    return random.randint(1, 2**30)


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CMBTASK_OPERATOR_", frozen=True, extra="ignore")

    #: namespaces to watch; empty means every namespace (cluster-wide)
    namespaces: list[str] = Field(default_factory=list)
    gateway_url: str = "http://cmbtask-gateway:8080"
    image: str = "cmbtask-runner:latest"
    image_pull_policy: str = "IfNotPresent"
    runner_command: list[str] = Field(default_factory=lambda: ["python", "-m", "cmbtask_runner"])
    cpu_request: str = "100m"
    cpu_limit: str = "1"
    memory_request: str = "128Mi"
    memory_limit: str = "1Gi"
    #: scheduling of runner pods, as in a pod spec
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    #: Secrets for pulling the runner image: names, or ``{"name": …}`` as in a pod spec
    image_pull_secrets: list[str | dict[str, str]] = Field(default_factory=list)
    work_dir: str = "/work"
    #: more environment for every runner pod, such as the ``OTEL_*`` variables
    #: that say where its spans go (JSON: ``{"OTEL_EXPORTER_OTLP_ENDPOINT": …}``)
    runner_env: dict[str, str] = Field(default_factory=dict)
    work_dir_size_limit: str = "1Gi"
    run_as_user: int = Field(default=10001, ge=1)
    #: engines a runner image knows; anything else fails at once
    engines: list[str] = Field(default_factory=lambda: ["demo", "script", "cmbagent"])
    #: added to a task's timeout for the pod's activeDeadlineSeconds, so the
    #: runner reports ``timed_out`` itself before the pod is killed
    deadline_grace_s: int = Field(default=30, ge=0)
    #: SIGTERM-to-SIGKILL grace when a task is cancelled
    pod_grace_s: int = Field(default=15, ge=0)
    #: how long a new CmbTask may wait for its token Secret before it fails
    secret_wait_s: float = Field(default=60.0, ge=0)
    ttl_seconds_after_finished: int = Field(default=24 * 3600, ge=0)
    ttl_check_interval_s: float = Field(default=10.0, gt=0)
    peering_name: str = "cmbtask"
    #: run without peering (tests, a single replica by construction)
    standalone: bool = False
    priority: int = Field(default_factory=_random_priority)
    #: kopf's liveness probe, e.g. ``http://0.0.0.0:8080/healthz``; none when unset
    liveness_endpoint: str | None = None

    @field_validator("runner_env")
    @classmethod
    def _not_the_contract(cls, env: dict[str, str]) -> dict[str, str]:
        # The runner process contract (task id, token, trace context) is the operator's
        # to set, and a user's provider keys reach only that user's runners.
        reserved = {ENV_TRACEPARENT, *PROVIDER_KEY_VARIABLES.values()}
        taken = sorted(key for key in env if key.startswith("CMBTASK_") or key in reserved)
        if taken:
            raise ValueError(f"runner_env may not set {', '.join(taken)}")
        return env
