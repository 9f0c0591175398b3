"""Output capture, in a child process of its own (it takes over fd 1 and 2)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

PROGRAM = textwrap.dedent(
    """
    import json, logging, os, subprocess, sys, threading
    from cmbtask_runner.capture import OutputCapture

    events = []
    lock = threading.Lock()

    def emit(event_type, data):
        with lock:
            events.append(data)

    lines, cap = int(sys.argv[2]), int(sys.argv[3])
    capture = OutputCapture(emit, max_lines_per_s=cap)
    capture.start()
    for n in range(lines):
        print(f"print {n}")
        sys.stdout.write(f"write {n}\\n")
        logging.getLogger("user.code").warning("log %d", n)
        os.write(1, f"fd {n}\\n".encode())
        sys.stderr.write(f"err {n}\\n")
    logging.getLogger("cmbtask_runner.link").warning("runner internal")
    logging.getLogger("websockets.client").warning("library internal")
    subprocess.run([sys.executable, "-c", f"for n in range({lines}): print('child', n)"], check=True)
    sys.stdout.write("no newline at the end")
    capture.stop()
    with open(sys.argv[1], "w") as out:
        json.dump(events, out)
    """
)


def _run(tmp_path: Path, lines: int, cap: int = 1_000_000) -> list[dict[str, Any]]:
    out = tmp_path / "events.json"
    subprocess.run(
        [sys.executable, "-c", PROGRAM, str(out), str(lines), str(cap)],
        check=True,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    events: list[dict[str, Any]] = json.loads(out.read_text())
    return events


def _lines(events: list[dict[str, Any]], stream: str) -> list[str]:
    text = "".join(event["text"] for event in events if event["stream"] == stream)
    return text.splitlines()


def test_every_line_exactly_once_by_every_route(tmp_path: Path) -> None:
    events = _run(tmp_path, lines=300)
    stdout = _lines(events, "stdout")
    for prefix in ("print", "write", "fd", "child"):
        got = [line for line in stdout if line.startswith(prefix + " ")]
        assert got == [f"{prefix} {n}" for n in range(300)], prefix
    assert stdout[-1] == "no newline at the end"
    assert _lines(events, "stderr") == [f"err {n}" for n in range(300)]
    logged = _lines(events, "log")
    assert logged == [f"WARNING user.code: log {n}" for n in range(300)]
    assert all(event.get("level") == "WARNING" for event in events if event["stream"] == "log")
    assert not any("internal" in line for line in logged), "the runner's own logs stay out"


def test_bursts_are_coalesced(tmp_path: Path) -> None:
    events = _run(tmp_path, lines=2000)
    total_lines = sum(event["text"].count("\n") for event in events)
    assert total_lines >= 2000 * 6
    assert len(events) < total_lines / 20, f"{len(events)} events for {total_lines} lines"
    assert max(len(event["text"]) for event in events) <= 64 * 1024


def test_flood_is_dropped_with_one_notice(tmp_path: Path) -> None:
    events = _run(tmp_path, lines=3000, cap=500)
    notices = [event for event in events if "dropped" in event]
    assert notices, "a notice says lines were dropped"
    dropped = sum(event["dropped"] for event in notices)
    kept_text = "".join(event["text"] for event in events if "dropped" not in event)
    # the program's last line has no newline: it counts once, whether it was kept or dropped
    kept = kept_text.count("\n") + ("no newline at the end" in kept_text)
    # 3000 lines by print, write, fd 1 and a child to stdout, plus stderr and log, plus that
    # last line: all accounted for
    assert dropped > 0 and kept + dropped == 3000 * 6 + 1
    assert "dropped" in notices[0]["text"] and notices[0]["stream"] == "log"
    assert {notice["dropped_stream"] for notice in notices} == {"stdout", "stderr", "log"}
    assert len(notices) <= 6, "one notice per stream and flood, not one per line"


FLUSH_PROGRAM = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from cmbtask_runner.capture import OutputCapture

    events = []
    capture = OutputCapture(lambda kind, data: events.append(data["text"]), coalesce_s=10.0)
    capture.start()
    for n in range(50):
        print("line", n)
        subprocess.run([sys.executable, "-c", f"print('child', {n})"], check=True)
        capture.flush()
        events.append(f"EVENT {n}")
    capture.stop()
    with open(sys.argv[1], "w") as out:
        json.dump(events, out)
    """
)


def test_flush_sends_what_was_written_before_the_next_event(tmp_path: Path) -> None:
    out = tmp_path / "events.json"
    subprocess.run([sys.executable, "-c", FLUSH_PROGRAM, str(out)], check=True, timeout=120)
    events: list[str] = json.loads(out.read_text())
    texts = "".join(e if not e.startswith("EVENT") else f"<{e}>" for e in events)
    for n in range(50):
        before, _, _ = texts.partition(f"<EVENT {n}>")
        assert before.endswith(f"line {n}\nchild {n}\n"), f"output of round {n} came after its event"
