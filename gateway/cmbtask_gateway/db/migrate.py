"""Schema migrations, run programmatically (``cmbtask db …`` and gateway start)."""

from __future__ import annotations

import io
from typing import TextIO

from alembic import command
from alembic.config import Config
from cmbtask_migrations import SCRIPT_LOCATION

__all__ = ["alembic_config", "current", "downgrade", "upgrade"]


def alembic_config(url: str, stdout: TextIO | None = None) -> Config:
    config = Config(stdout=stdout) if stdout is not None else Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking: call from a thread when an event loop is running."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str:
    buffer = io.StringIO()
    command.current(alembic_config(url, stdout=buffer))
    return buffer.getvalue().strip()
