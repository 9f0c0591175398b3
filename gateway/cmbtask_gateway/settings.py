"""Gateway configuration: one pydantic-settings class, read from ``CMBTASK_*``.

Containers configure the gateway through the environment only; the ``cmbtask
up`` command fills the same object from its flags.
"""

from __future__ import annotations

import secrets
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_REPO_UI_DIST = Path(__file__).resolve().parents[2] / "ui" / "dist"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CMBTASK_", extra="ignore")

    data_dir: Path = Path(".data")
    database_url: str | None = None
    auto_migrate: bool = True

    host: str = "127.0.0.1"
    port: int = 8000
    #: base URL runners dial back to; defaults to http://host:port
    public_url: str | None = None
    ui_dir: Path | None = None

    auth_mode: Literal["none", "token", "proxy"] = "none"
    #: the single user of ``none`` mode
    local_user: str = "local"
    proxy_user_header: str = "X-Forwarded-User"
    #: HMAC key for runner tokens; generated into the data dir when unset
    secret_key: str | None = None
    runner_token_ttl_s: int = 7 * 24 * 3600
    #: how long a user token, once checked, is trusted without asking the database
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    #: how often open sockets' tokens are checked for revocation and expiry
    token_check_interval_s: float = Field(default=2.0, gt=0)

    # Per-user limits (0: none). Sockets are counted per gateway process;
    # sessions and tasks in the database, so across replicas.
    max_sockets_per_user: int = Field(default=256, ge=0)
    max_active_sessions_per_user: int = Field(default=200, ge=0)
    max_task_submissions_per_minute: int = Field(default=120, ge=0)
    #: tasks not yet finished (queued, starting, running, waiting for approval)
    max_concurrent_tasks_per_user: int = Field(default=64, ge=0)
    #: the ``Retry-After`` of a limit that frees up when something else ends
    limit_retry_after_s: int = Field(default=10, ge=1)
    #: hand runners the gateway's own provider keys (``OPENAI_API_KEY`` …) where
    #: their user stored none; off: a runner has only the keys its user stored
    provider_keys_fallback: bool = False

    executor: Literal["local", "kubernetes", "none"] = "local"
    runner_command: list[str] = Field(default_factory=lambda: [sys.executable, "-m", "cmbtask_runner"])
    max_concurrent_tasks: int = Field(default=16, ge=1)
    cancel_grace_s: float = Field(default=10.0, ge=0)
    watchdog_interval_s: float = Field(default=1.0, gt=0)
    #: a task whose runner never connects within this is failed
    start_timeout_s: float = Field(default=120.0, gt=0)
    #: an ``EnginesDescription`` (JSON) of what the runners can run; when unset,
    #: the local executor asks ``runner_command --describe-engines`` at start
    engines_json: str | None = None
    describe_engines_timeout_s: float = Field(default=30.0, gt=0)
    #: ask the runner command again when its answer is this old (0: never)
    describe_engines_refresh_s: float = Field(default=60.0, ge=0)
    kubernetes_namespace: str = "default"
    kubernetes_runner_image: str = "cmbtask-runner:latest"
    #: take a kubectl decision's ``cmbtask.io/decided-by`` annotation as the
    #: decider; true only where the chart's admission policies stamp and guard
    #: it (otherwise every such decision is resolved by ``kubernetes:unknown``)
    kubernetes_trust_decided_by: bool = True

    approval_timeout_s: float = Field(default=3600.0, gt=0)
    approval_sweep_interval_s: float = Field(default=0.5, gt=0)

    heartbeat_s: float = Field(default=15.0, gt=0)
    #: WebSocket pings: a peer that answers none within the timeout is gone
    #: (a half-open connection) and its socket is closed
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)
    client_queue_size: int = Field(default=4096, ge=16)
    max_client_frame_bytes: int = Field(default=256 * 1024, ge=1024)
    max_runner_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: path and query string; longer gets 414
    max_url_bytes: int = Field(default=8 * 1024, ge=256)
    #: all request headers together, and how many; more gets 431
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    #: a request body must be complete this long after the request began (408)
    request_body_timeout_s: float = Field(default=30.0, gt=0)
    max_bad_frames: int = Field(default=10, ge=1)
    replay_page_size: int = Field(default=500, ge=1)

    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cmbtask.db').resolve()}"

    @cached_property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host
        return f"http://{host}:{self.port}"

    @cached_property
    def resolved_ui_dir(self) -> Path | None:
        candidate = self.ui_dir or _REPO_UI_DIST
        return candidate if (candidate / "index.html").is_file() else None

    def runner_secret(self) -> bytes:
        """The runner-token key: configured, or generated once per data dir."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip().encode()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
