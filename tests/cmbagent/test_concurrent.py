"""Two cmbagent tasks at once: each one's events, output and files are its own."""

from __future__ import annotations

import httpx
import pytest

from tests.support.gateway import GatewayProcess

from .driving import follow, submit
from .releases import notes_path

pytestmark = pytest.mark.cmbagent


def test_two_tasks_at_once_do_not_mix(client: httpx.Client, cmb_gateway: GatewayProcess) -> None:
    prompts = ["Question ALPHA-1111 about the CMB?", "Question BRAVO-2222 about the CMB?"]
    runs = [submit(client, "one-shot", prompt, {"agent": "researcher"}) for prompt in prompts]
    for run in runs:
        follow(client, run, None, timeout_s=300)

    for run, mine, theirs in ((runs[0], "ALPHA-1111", "BRAVO-2222"), (runs[1], "BRAVO-2222", "ALPHA-1111")):
        assert run.final["type"] == "task.succeeded", run.final
        assert {e["task_id"] for e in run.events if e.get("task_id")} == {run.task_id}
        texts = [str(e["data"]) for e in run.events]
        assert any(mine in text for text in texts)
        assert not any(theirs in text for text in texts)
        outputs = "".join(o["data"]["text"] for o in run.of("output"))
        assert f"/tasks/{run.task_id}/" in outputs
        other = runs[1] if run is runs[0] else runs[0]
        assert other.task_id not in outputs
        paths = [e["data"]["path"] for e in run.of("file.created")]
        assert notes_path() in paths
        started = run.of("task.started")[0]["data"]["pid"]
        assert started != other.of("task.started")[0]["data"]["pid"]
