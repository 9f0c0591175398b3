"""A gateway that is its process's only app freezes its startup heap, so a
full cycle collection no longer walks the modules, the app and the pools (its
pause was the paced latency's p99); an app built inside another program (a
test, an embedding) leaves that program's collector alone.

Each case runs in a fresh interpreter: ``gc.freeze`` is process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import asyncio, gc, json, sys
from cmbtask_gateway.app import create_app
from cmbtask_gateway.settings import Settings

async def main():
    settings = Settings(data_dir=sys.argv[1], executor="none")
    app = create_app(settings, own_process=sys.argv[2] == "own")
    before = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        started = gc.get_freeze_count()
    print(json.dumps({"before": before, "started": started}))

asyncio.run(main())
"""


def _freeze_counts(tmp_path: Path, mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / mode), mode],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    counts: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


@pytest.mark.parametrize("mode", ["own", "embedded"])
def test_the_startup_heap_is_frozen_only_in_the_gateways_own_process(tmp_path: Path, mode: str) -> None:
    counts = _freeze_counts(tmp_path, mode)
    assert counts["before"] == 0
    if mode == "own":
        # the imported modules and the built gateway: far more than a handful
        assert counts["started"] > 50_000
    else:
        assert counts["started"] == 0
