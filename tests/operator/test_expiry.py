"""When a finished CmbTask is due for deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cmbtask_operator.expiry import expired

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def obj(phase: str | None, finished: datetime | None, ttl: int | None = None, deleting: bool = False) -> dict:
    status = {"phase": phase} if phase else {}
    if finished is not None:
        status["finishTime"] = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {"name": "t", "namespace": "n", **({"deletionTimestamp": "x"} if deleting else {})}
    spec = {"engine": "demo", **({"ttlSecondsAfterFinished": ttl} if ttl is not None else {})}
    return {"metadata": meta, "spec": spec, "status": status}


def test_spec_ttl_wins_over_the_default() -> None:
    assert expired(obj("succeeded", NOW - timedelta(seconds=5), ttl=2), NOW, 3600)
    assert not expired(obj("succeeded", NOW - timedelta(seconds=5), ttl=60), NOW, 1)
    assert expired(obj("failed", NOW - timedelta(seconds=5), ttl=0), NOW, 3600)


def test_default_ttl_applies_when_the_spec_has_none() -> None:
    assert not expired(obj("cancelled", NOW - timedelta(seconds=5)), NOW, 10)
    assert expired(obj("cancelled", NOW - timedelta(seconds=11)), NOW, 10)


def test_unfinished_or_already_deleting_objects_stay() -> None:
    assert not expired(obj("running", NOW - timedelta(days=9), ttl=0), NOW, 0)
    assert not expired(obj(None, None, ttl=0), NOW, 0)
    assert not expired(obj("succeeded", None, ttl=0), NOW, 0)
    assert not expired(obj("succeeded", NOW - timedelta(days=1), ttl=0, deleting=True), NOW, 0)
