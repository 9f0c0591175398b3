"""Deleting finished CmbTasks once their TTL has passed.

One loop lists the CmbTasks every few seconds, rather than a kopf timer per
object: kopf puts a finalizer on every object that has a timer, and a
finalizer makes ``kubectl delete`` hang whenever the operator is down. The
decision itself (``expired``) is pure and unit-tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from .kube import Kube
from .settings import OperatorSettings
from .statuses import is_final

__all__ = ["expire_forever", "expired"]

log = structlog.get_logger("cmbtask_operator.expiry")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expired(obj: Mapping[str, Any], now: datetime, default_ttl_s: int) -> bool:
    """Has this CmbTask finished longer ago than its TTL?"""
    status = obj.get("status") or {}
    if not is_final(status.get("phase")) or obj.get("metadata", {}).get("deletionTimestamp"):
        return False
    finished = _parse_time(status.get("finishTime"))
    ttl = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
    ttl = default_ttl_s if ttl is None else ttl
    return finished is not None and finished + timedelta(seconds=ttl) <= now


async def expire_once(kube: Kube, config: OperatorSettings) -> int:
    now = datetime.now(UTC)
    deleted = 0
    for obj in await kube.list_cmbtasks(config.namespaces):
        if expired(obj, now, config.ttl_seconds_after_finished):
            meta = obj["metadata"]
            if await kube.delete_cmbtask(meta["namespace"], meta["name"]):
                deleted += 1
                log.info("cmbtask.expired", cmbtask=meta["name"], namespace=meta["namespace"])
    return deleted


async def expire_forever(kube: Kube, config: OperatorSettings) -> None:
    while True:
        await asyncio.sleep(config.ttl_check_interval_s)
        try:
            await expire_once(kube, config)
        except asyncio.CancelledError:
            raise
        except Exception:  # the API server may be away for a moment; try again next round
            log.exception("cmbtask.expiry_failed")
