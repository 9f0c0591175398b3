"""SQLAlchemy models: everything that must survive a gateway restart.

The Alembic revisions in ``migrations/`` create exactly these tables; a test
runs autogenerate against a migrated database and fails on any difference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cmbtask_protocol import DEFAULT_RETRY_BACKOFF_S
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiToken",
    "Approval",
    "Base",
    "Event",
    "ProviderKey",
    "Session",
    "Task",
    "UserSetting",
    "UtcDateTime",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(36)
# BigInteger autoincrement is only special-cased by SQLite for INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, also read back aware from SQLite (which
    stores none): everything we store is UTC, so rows map onto views as is."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    version: Mapped[int] = mapped_column(Integer, default=1)
    #: the last event ``seq`` handed out; bumped in the same transaction as the insert
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    phase: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[int | None] = mapped_column(Integer)
    plan: Mapped[list[Any] | None] = mapped_column(JSON)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    #: false (the default): the session's tasks run one at a time, in submission order
    parallel_tasks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_sessions_owner_created", "owner", "created_at"),)

    @property
    def has_state(self) -> bool:
        return self.state is not None


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    engine: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    phase: Mapped[str] = mapped_column(String(32), index=True)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    approval_timeout_s: Mapped[float | None] = mapped_column(Float)
    on_timeout: Mapped[str] = mapped_column(String(16), default="reject")
    executor: Mapped[str | None] = mapped_column(String(32))
    handle: Mapped[str | None] = mapped_column(String(300))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    #: highest runner ``rseq`` stored without a gap
    acked_rseq: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(String(200))
    #: the task's budget (its own, or the owner's defaults at submit time)
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(BigInteger)
    #: the owner's price overrides at submit time, so a later edit cannot reprice a running task
    prices: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the run the task is on (1 first); counted here so a restarted gateway retries
    #: exactly the remaining times (``cmbtask_protocol.retries``)
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    retry_backoff_s: Mapped[float] = mapped_column(
        Float, default=DEFAULT_RETRY_BACKOFF_S, server_default=text("5")
    )
    #: when the current attempt became due; a queued task waits until then (its backoff)
    retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: the W3C traceparent of its ``task.submit`` span, while the gateway traces: the
    #: launch (any replica, any attempt) and its frames' ingest join that trace
    trace_parent: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(ID)
    #: the runner's own number; NULL for events the gateway makes itself
    rseq: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UtcDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),
        UniqueConstraint("task_id", "rseq", name="uq_events_task_rseq"),
    )


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    options: Mapped[list[Any]] = mapped_column(JSON)
    allow_text: Mapped[bool] = mapped_column(Boolean, default=False)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True)
    on_timeout: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16))
    response: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    #: sha256 of the token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: what the token is for, as its owner wrote it ("laptop", "ci")
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ProviderKey(Base):
    """One user's key for one LLM provider, encrypted (see ``crypto.KeyBox``)."""

    __tablename__ = "provider_keys"

    user: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: nonce + AES-GCM ciphertext, bound to (user, provider); the key is never stored in clear
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class UserSetting(Base):
    """A user's defaults for new tasks (``cmbtask_protocol.UserSettings``)."""

    __tablename__ = "user_settings"

    user: Mapped[str] = mapped_column(String(200), primary_key=True)
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(BigInteger)
    prices: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
