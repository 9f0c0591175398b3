"""``cmbtask token create|list|revoke``: user tokens, from where the database is.

These talk to the database directly, not to a gateway: whoever can reach the
database (an operator's shell, ``kubectl exec`` into a gateway pod) is the
administrator, so no admin role is needed in the API. Running gateways pick
up a revocation within ``token_check_interval_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .console import say, warn
from .services.tokens import TokenInfo, create_token, list_tokens, revoke_token
from .settings import Settings

__all__ = ["run"]

T = TypeVar("T")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from .db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    if args.action == "create":
        info, token = _with_database(
            settings,
            lambda db: create_token(db, args.user, name=args.name, expires_in_days=args.expires_in),
        )
        # stdout carries the token alone, for scripts: TOKEN=$(cmbtask token create bob)
        say(token, soft_wrap=True, markup=False)
        until = f", expires {_when(info.expires_at)}" if info.expires_at else ", never expires"
        warn(f"token {info.id} for {info.user}{until}; it is shown only now", markup=False, soft_wrap=True)
    elif args.action == "list":
        tokens = _with_database(settings, lambda db: list_tokens(db, args.user))
        if args.json:
            say(json.dumps([info.as_json() for info in tokens], indent=2), markup=False, soft_wrap=True)
        else:
            say(_table(tokens), markup=False, soft_wrap=True)
    else:
        info = _with_database(settings, lambda db: revoke_token(db, args.id))
        when = _when(info.revoked_at)
        say(f"revoked token {info.id} of {info.user} at {when}", markup=False, soft_wrap=True)
    return 0


def _with_database(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    from .db.engine import make_engine, make_sessionmaker

    async def go() -> T:
        engine = make_engine(settings.resolved_database_url)
        try:
            return await work(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _table(tokens: list[TokenInfo]) -> str:
    """Plain aligned columns: whole ids whatever the terminal's width, and
    easy to read back with ``awk``."""
    rows = [("ID", "USER", "NAME", "CREATED", "EXPIRES", "STATUS")]
    for info in tokens:
        status = info.status if info.status != "revoked" else f"revoked {_when(info.revoked_at)}"
        dates = (_when(info.created_at), _when(info.expires_at))
        rows.append((info.id, info.user, info.name or "-", *dates, status))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
