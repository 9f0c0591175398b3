"""Budgets: the runner's tally of ``cost.update``, and tasks it stops.

The units price calls from the table and its overrides; the end-to-end tests
run ``demo`` tasks under a real gateway and runner until a limit is crossed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cmbtask_gateway.terminal_client import spend_line
from cmbtask_protocol import ModelPrice, TaskSpec
from cmbtask_runner.budget import Budget

from tests.runner.gateway_tasks import LOCAL, all_events, kill_runners_under, new_session, submit, wait_phase
from tests.support.gateway import GatewayProcess


def _spec(**fields: Any) -> TaskSpec:
    return TaskSpec(id="t", session_id="s", engine="demo", mode="one-shot", **fields)


def test_known_models_are_priced_from_the_table_others_keep_the_engines_dollars() -> None:
    budget = Budget.for_task(_spec(max_cost_usd=1.0))
    priced, over = budget.charge(
        {"model": "gpt-4.1-2025-04-14", "prompt_tokens": 1000, "completion_tokens": 500}
    )
    assert priced["cost_usd"] == pytest.approx(0.002 + 0.004)
    assert over is None
    unknown, _ = budget.charge({"model": "local-llama", "prompt_tokens": 10, "cost_usd": 0.25})
    assert unknown["cost_usd"] == 0.25
    assert unknown["total_cost_usd"] == pytest.approx(0.256)
    assert unknown["total_tokens"] == 1510
    assert unknown["max_cost_usd"] == 1.0 and "max_tokens" not in unknown


def test_user_prices_override_the_table() -> None:
    cheap = ModelPrice(prompt_usd_per_mtok=0.0, completion_usd_per_mtok=0.0)
    budget = Budget.for_task(_spec(prices={"gpt-4o": cheap}))
    priced, _ = budget.charge({"model": "gpt-4o", "prompt_tokens": 10**6, "completion_tokens": 10**6})
    assert priced["cost_usd"] == 0.0


def test_crossing_a_limit_says_by_how_much() -> None:
    budget = Budget.for_task(_spec(max_cost_usd=0.5))
    assert budget.charge({"cost_usd": 0.5})[1] is None  # reaching the limit is allowed
    assert budget.charge({"cost_usd": 0.02})[1] == "budget exceeded: $0.52 of $0.50"
    tokens = Budget.for_task(_spec(max_tokens=1000))
    assert tokens.charge({"prompt_tokens": 900, "completion_tokens": 334})[1] == (
        "budget exceeded: 1,234 tokens of 1,000"
    )


def test_spend_line_shows_spend_against_budget() -> None:
    data = {"total_cost_usd": 0.12, "max_cost_usd": 0.5, "total_tokens": 3400, "max_tokens": 10000}
    assert spend_line(data) == "spent $0.1200 of $0.50 · 3,400 tokens of 10,000"
    assert spend_line({"cost_usd": 0.01}) == "spent $0.0100"


# ---- through a real gateway and runner --------------------------------------------------


@pytest.fixture
def local_gateway(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> Iterator[GatewayProcess]:
    yield gateway_factory(**LOCAL)
    kill_runners_under(tmp_path)


def _costs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == "cost.update"]


def _steps_started(events: list[dict[str, Any]]) -> list[int]:
    return [event["data"]["step"] for event in events if event["type"] == "step.started"]


DEMO = {"steps": 6, "step_delay_s": 0.05, "lines_per_step": 1}


@pytest.mark.slow
async def test_a_dollar_budget_stops_the_task_failed_and_keeps_its_files(
    local_gateway: GatewayProcess,
) -> None:
    with local_gateway.client() as http:
        session = new_session(http)
        params = {**DEMO, "cost_usd_per_step": 0.2}
        task = submit(http, session, engine="demo", params=params, max_cost_usd=0.5)
        assert task["max_cost_usd"] == 0.5
    done = await wait_phase(local_gateway, task["id"], timeout_s=90)
    assert done["phase"] == "failed"
    assert done["reason"] == "budget exceeded: $0.60 of $0.50"
    events = all_events(local_gateway, session)
    assert _steps_started(events) == [1, 2, 3]  # stopped where the third step's cost crossed it
    assert [round(c["total_cost_usd"], 2) for c in _costs(events)] == [0.2, 0.4, 0.6]
    assert all(c["max_cost_usd"] == 0.5 for c in _costs(events))
    [final] = [event for event in events if event["type"] == "task.failed"]
    assert final["data"]["budget"]["max_cost_usd"] == 0.5
    work_dir = local_gateway.data_dir / "tasks" / task["id"]
    assert (work_dir / "runner.out").is_file()


@pytest.mark.slow
async def test_token_budget_and_user_defaults_with_price_overrides(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session = new_session(http)
        by_tokens = submit(http, session, engine="demo", params=DEMO, max_tokens=300)
        # defaults for the user's later tasks; "demo" priced at $1,000 per million prompt tokens
        prices = {"demo": {"prompt_usd_per_mtok": 1000.0, "completion_usd_per_mtok": 0.0}}
        saved = http.put("/api/settings", json={"max_cost_usd": 0.25, "prices": prices})
        assert saved.status_code == 200, saved.text
        assert http.get("/api/settings").json()["max_cost_usd"] == 0.25
        by_default = submit(http, new_session(http), engine="demo", params=DEMO)
        assert by_default["max_cost_usd"] == 0.25 and by_default["max_tokens"] is None
        assert http.put("/api/settings", json={"max_cost_usd": -1}).status_code == 422
    first = await wait_phase(local_gateway, by_tokens["id"], timeout_s=90)
    assert first["reason"] == "budget exceeded: 420 tokens of 300"  # 140 + 280 tokens
    second = await wait_phase(local_gateway, by_default["id"], timeout_s=90)
    assert second["phase"] == "failed"
    assert second["reason"] == "budget exceeded: $0.30 of $0.25"  # 100 then 200 prompt tokens
