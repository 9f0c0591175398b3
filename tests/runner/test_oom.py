"""Reading the cgroup's OOM-kill count, in both cgroup versions' formats."""

from __future__ import annotations

from pathlib import Path

from cmbtask_runner.oom import oom_kills


def test_v2_memory_events(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert oom_kills((events,)) == 2


def test_v1_oom_control_when_v2_is_absent(tmp_path: Path) -> None:
    control = tmp_path / "memory.oom_control"
    control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert oom_kills((tmp_path / "missing", control)) == 3


def test_unknown_is_zero(tmp_path: Path) -> None:
    garbled = tmp_path / "memory.events"
    garbled.write_text("oom_kill many\n")
    assert oom_kills((tmp_path / "missing", garbled)) == 0
