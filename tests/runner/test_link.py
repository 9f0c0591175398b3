"""The link delivers every frame exactly once across drops, restarts and outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cmbtask_protocol import RunnerApprovalDecision, RunnerCancel, RunnerStateResult, RunnerWelcome
from cmbtask_runner.link import Backoff, Inbound, Link, LinkFatal, runner_ws_url
from cmbtask_runner.outbox import Outbox

from tests.runner.runner_fakegw import TOKEN, FakeGateway, TaskRecord, wait_for


class Harness:
    """A link in this process, with what it hands the task recorded."""

    def __init__(
        self,
        gw: FakeGateway,
        record: TaskRecord,
        tmp: Path,
        token: str = TOKEN,
        give_up_s: float = 30,
        **outbox_kw: int,
    ):
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue()
        self.received: list[Inbound] = []
        self.pending: list[str] = []
        self.outbox = Outbox(tmp / "spill.jsonl", **outbox_kw)
        self.link = Link(
            gateway_url=gw.url,
            task_id=record.spec.id,
            token=token,
            outbox=self.outbox,
            inbound=self.inbound,
            pending_approvals=lambda: list(self.pending),
            pid=1234,
            host="test",
            give_up_s=give_up_s,
            backoff=Backoff(first_s=0.02, cap_s=0.2),
        )
        self.outbox.set_on_put(self.link.wake)
        self.task: asyncio.Task[None] | None = None

    def _of(self, kind: type[Inbound]) -> list[Any]:
        while not self.inbound.empty():
            self.received.append(self.inbound.get_nowait())
        return [frame for frame in self.received if isinstance(frame, kind)]

    @property
    def welcomes(self) -> list[RunnerWelcome]:
        return self._of(RunnerWelcome)

    @property
    def decisions(self) -> list[RunnerApprovalDecision]:
        return self._of(RunnerApprovalDecision)

    @property
    def results(self) -> list[RunnerStateResult]:
        return self._of(RunnerStateResult)

    @property
    def cancels(self) -> list[str]:
        return [frame.reason for frame in self._of(RunnerCancel)]

    def start(self) -> None:
        self.task = asyncio.create_task(self.link.run())

    def emit(self, count: int, start: int = 0) -> int:
        last = 0
        for n in range(start, start + count):
            last = self.outbox.put(
                {"type": "event", "event_type": "output", "data": {"stream": "stdout", "text": f"{n}\n"}}
            )
        return last

    async def stop(self) -> None:
        await self.link.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def harness(gw: FakeGateway, tmp_path: Path) -> AsyncIterator[tuple[Harness, TaskRecord]]:
    record = gw.add_task("demo")
    h = Harness(gw, record, tmp_path, max_frames=50)
    h.start()
    try:
        yield h, record
    finally:
        await h.stop()


def _texts(record: TaskRecord) -> list[str]:
    return [frame["data"]["text"] for frame in record.events]


def test_ws_url_from_http_base() -> None:
    assert runner_ws_url("http://127.0.0.1:8000/", "t1") == "ws://127.0.0.1:8000/ws/runner/t1"
    assert runner_ws_url("https://gw.example", "t1") == "wss://gw.example/ws/runner/t1"
    assert runner_ws_url("ws://h:1", "t1") == "ws://h:1/ws/runner/t1"


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(first_s=0.1, cap_s=5.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(2.5 <= delay <= 5.0 for delay in delays[7:])
    assert len(set(delays[7:])) > 1, "jittered, not all equal"
    backoff.reset()
    assert backoff.next_delay() <= 0.1


async def test_delivers_in_order_and_acks(harness: tuple[Harness, TaskRecord]) -> None:
    h, record = harness
    last = h.emit(500)
    assert await h.link.wait_acked(last, 20)
    assert _texts(record) == [f"{n}\n" for n in range(500)]
    assert record.gaps == 0 and h.outbox.pending == 0
    assert record.hellos[0]["pid"] == 1234


async def test_drop_mid_stream_resends_without_loss(
    gw: FakeGateway, harness: tuple[Harness, TaskRecord]
) -> None:
    h, record = harness
    h.emit(300)
    await wait_for(lambda: record.acked >= 50, what="first frames stored")
    gw.drop(record)
    h.emit(300, start=300)
    await wait_for(lambda: record.connects >= 2, what="reconnect")
    assert await h.link.wait_acked(600, 20)
    assert _texts(record) == [f"{n}\n" for n in range(600)], "every frame exactly once, in order"
    assert record.gaps == 0


async def test_lost_acks_mean_resend_and_the_gateway_dedupes(
    gw: FakeGateway, harness: tuple[Harness, TaskRecord]
) -> None:
    h, record = harness
    gw.ack = False
    h.emit(40)
    await wait_for(lambda: record.acked == 40, what="frames stored without acks")
    assert h.outbox.pending == 40
    gw.ack = True
    gw.drop(record)
    await wait_for(lambda: record.connects >= 2, what="reconnect")
    h.emit(1, start=40)
    assert await h.link.wait_acked(41, 20)
    # welcome.acked_rseq told the runner what the gateway holds: nothing is sent twice.
    assert record.duplicates == 0
    assert _texts(record) == [f"{n}\n" for n in range(41)]


async def test_gateway_away_long_spills_then_delivers_everything(
    gw: FakeGateway, harness: tuple[Harness, TaskRecord], tmp_path: Path
) -> None:
    h, record = harness
    h.emit(10)
    assert await h.link.wait_acked(10, 20)
    await gw.stop()
    last = h.emit(400, start=10)  # the window is 50 frames: the rest goes to disk
    assert h.outbox.spilled_total >= 350
    assert (tmp_path / "spill.jsonl").exists()
    await asyncio.sleep(0.5)
    await gw.start()  # same port, as a restarted gateway
    assert await h.link.wait_acked(last, 30)
    assert _texts(record) == [f"{n}\n" for n in range(410)]
    assert not (tmp_path / "spill.jsonl").exists()


async def test_hello_carries_pending_approvals_and_gets_decisions(
    gw: FakeGateway, harness: tuple[Harness, TaskRecord]
) -> None:
    h, record = harness
    await wait_for(lambda: record.ws is not None, what="connect")
    record.decisions["a" * 32] = {
        "type": "approval.decision",
        "approval_id": "a" * 32,
        "status": "approved",
        "decision": "approve",
        "resolved_by": "alice",
    }
    h.pending.append("a" * 32)
    gw.drop(record)
    await wait_for(lambda: bool(h.decisions), what="decision replayed after reconnect")
    assert record.hellos[-1]["pending_approvals"] == ["a" * 32]
    assert h.decisions[0].resolved_by == "alice"


async def test_cancel_and_state_results_reach_the_inbound_queue_in_order(
    gw: FakeGateway, harness: tuple[Harness, TaskRecord]
) -> None:
    h, record = harness
    rseq = h.outbox.put({"type": "state.save", "state": {"k": 1}, "expected_version": 0})
    await wait_for(lambda: bool(h.results), what="state result")
    assert h.results[0].rseq == rseq and h.results[0].ok and h.results[0].version == 1
    await gw.cancel(record, "timeout")
    await wait_for(lambda: bool(h.cancels), what="cancel")
    assert h.cancels == ["timeout"]


@pytest.mark.parametrize("token", ["wrong-token"])
async def test_bad_token_is_fatal(gw: FakeGateway, tmp_path: Path, token: str) -> None:
    record = gw.add_task("demo")
    h = Harness(gw, record, tmp_path, token=token)
    with pytest.raises(LinkFatal) as caught:
        await asyncio.wait_for(h.link.run(), 10)
    assert caught.value.code == 4401


async def test_unknown_task_is_fatal(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo")
    del gw.tasks[record.spec.id]
    h = Harness(gw, record, tmp_path)
    with pytest.raises(LinkFatal) as caught:
        await asyncio.wait_for(h.link.run(), 10)
    assert caught.value.code == 4404


async def test_replaced_connection_is_fatal(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo")
    first = Harness(gw, record, tmp_path / "a")
    (tmp_path / "a").mkdir()
    first.start()
    await wait_for(lambda: record.ws is not None, what="first connect")
    second = Harness(gw, record, tmp_path)
    second.start()
    assert first.task is not None
    with pytest.raises(LinkFatal) as caught:
        await asyncio.wait_for(first.task, 10)
    assert caught.value.code == 4409
    await second.stop()


async def test_gives_up_when_the_gateway_never_comes(tmp_path: Path) -> None:
    gw = FakeGateway()
    await gw.start()
    record = gw.add_task("demo")
    await gw.stop()
    h = Harness(gw, record, tmp_path, give_up_s=0.5)
    with pytest.raises(LinkFatal, match="unreachable"):
        await asyncio.wait_for(h.link.run(), 10)
