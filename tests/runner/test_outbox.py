"""The outbox numbers frames, keeps them until acked, and spills to disk in order."""

from __future__ import annotations

import threading
from pathlib import Path

from cmbtask_runner.outbox import Outbox


def _put(outbox: Outbox, count: int) -> list[int]:
    return [outbox.put({"type": "event", "event_type": "output", "data": {"n": n}}) for n in range(count)]


def test_numbers_from_one_and_forgets_what_is_acked(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "spill.jsonl")
    assert _put(outbox, 5) == [1, 2, 3, 4, 5]
    assert [f["rseq"] for f in outbox.frames_after(0)] == [1, 2, 3, 4, 5]
    outbox.ack(3)
    assert [f["rseq"] for f in outbox.frames_after(0)] == [4, 5]
    outbox.ack(2)  # acks are cumulative: an older one changes nothing
    assert outbox.pending == 2 and outbox.acked == 3
    assert [f["rseq"] for f in outbox.frames_after(4)] == [5]


def test_spills_past_the_memory_bound_and_reads_back_in_order(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    outbox = Outbox(spill, max_frames=10)
    _put(outbox, 35)
    assert len(outbox.frames_after(0)) == 10, "memory holds only the window"
    assert spill.exists() and outbox.spilled_total == 25
    seen: list[int] = []
    while outbox.pending:
        window = outbox.frames_after(outbox.acked)
        seen.extend(frame["rseq"] for frame in window)
        outbox.ack(window[-1]["rseq"])
    assert seen == list(range(1, 36))
    assert not spill.exists(), "an empty spill file is removed"


def test_ack_beyond_memory_skips_spilled_frames(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "spill.jsonl", max_frames=4)
    _put(outbox, 20)
    outbox.ack(17)  # a restarted gateway already held these (welcome.acked_rseq)
    assert [f["rseq"] for f in outbox.frames_after(0)] == [18, 19, 20]


def test_byte_bound_spills_big_frames(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "spill.jsonl", max_frames=1000, max_bytes=10_000)
    for _ in range(5):
        outbox.put({"type": "event", "data": {"text": "x" * 4000}})
    assert len(outbox.frames_after(0)) == 2
    assert outbox.pending == 5


def test_concurrent_producers_get_unique_consecutive_numbers(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "spill.jsonl", max_frames=50)
    threads = [threading.Thread(target=_put, args=(outbox, 200)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen: list[int] = []
    while outbox.pending:
        window = outbox.frames_after(outbox.acked)
        seen.extend(frame["rseq"] for frame in window)
        outbox.ack(window[-1]["rseq"])
    assert seen == list(range(1, 801))


def test_a_retry_numbers_on_after_what_the_gateway_holds(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    spill.write_text('{"rseq": 1, "left": "by the runner of the attempt before"}\n')
    outbox = Outbox(spill, max_frames=1)
    assert not spill.exists(), "an earlier runner's spill is not ours to send"
    outbox.continue_after(57)
    assert outbox.acked == 57 and outbox.put({"n": 1}) == 58 and outbox.put({"n": 2}) == 59
    outbox.continue_after(100)  # numbering already taken over: a reconnect changes nothing
    assert outbox.put({"n": 3}) == 60
    outbox.ack(58)
    assert [frame["rseq"] for frame in outbox.frames_after(58)] == [59]
