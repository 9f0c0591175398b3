"""Small shared pieces of the benchmarks: percentiles, RSS sampling, tables.

The benchmarks are scripts run from the repository root
(``.venv/bin/python bench/NAME.py``); Python puts ``bench/`` first on the
path, so they import this module by its plain name.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "ROOT",
    "CpuMeter",
    "PeakRss",
    "PySpy",
    "command_line",
    "mb",
    "ms",
    "percentile",
    "print_profile",
    "print_table",
]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def mb(size: int | float) -> str:
    return f"{size / 2**20:.1f} MB"


class PeakRss:
    """Samples the RSS of a process (and optionally its children) in a thread.

    ``peak`` is the process's own peak; ``children_peaks`` maps each child
    pid seen to its own peak, so one can report "one runner" precisely.
    """

    def __init__(self, pid: int, *, children: bool = False, interval_s: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.current = 0
        self.children_peaks: dict[int, int] = {}
        #: each child's start (``time.time()`` scale), for start-up breakdowns
        self.children_started: dict[int, float] = {}
        #: each child's CPU seconds (user + system) when last seen
        self.children_cpu: dict[int, float] = {}
        self._children = children
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rss-{pid}")

    def sample(self) -> None:
        try:
            self.current = self.process.memory_info().rss
        except psutil.Error:
            return
        self.peak = max(self.peak, self.current)
        if self._children:
            self._sample_children()

    def _sample_children(self) -> None:
        try:
            children = self.process.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                rss = child.memory_info().rss
                times = child.cpu_times()
            except psutil.Error:
                continue
            self.children_cpu[child.pid] = times.user + times.system
            if child.pid not in self.children_peaks:
                with contextlib.suppress(psutil.Error):
                    self.children_started[child.pid] = child.create_time()
            self.children_peaks[child.pid] = max(self.children_peaks.get(child.pid, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    def __enter__(self) -> PeakRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class CpuMeter:
    """CPU seconds that named processes use, and wait for, between two points.

    Divided by the wall time in between, "used" says who was the bottleneck
    (near 1.0: a whole core). "Waited" is the time their threads were ready
    to run but sat in the kernel's run queue (``/proc/PID/task/*/schedstat``):
    on a shared machine it shows how much of a latency is other work's doing.
    """

    def __init__(self, **pids: int) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, tuple[float, float]] = {}

    @staticmethod
    def _waited(pid: int) -> float:
        total = 0
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[1])
        return total / 1e9

    def _now(self) -> dict[str, tuple[float, float]]:
        seconds: dict[str, tuple[float, float]] = {}
        for name, process in self._processes.items():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[name] = (times.user + times.system, self._waited(process.pid))
        return seconds

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        """CPU seconds used per process since ``start``, and ``NAME.waited`` seconds."""
        spent: dict[str, float] = {}
        for name, (used, waited) in self._now().items():
            used_before, waited_before = self._start.get(name, (0.0, 0.0))
            spent[name] = used - used_before
            spent[f"{name}.waited"] = waited - waited_before
        return spent


class PySpy:
    """``py-spy record`` of one process while a ``with`` block runs.

    Writes collapsed stacks (``--format raw``) to ``path``; ``top`` sums them
    per function, by own time (the leaf frame) and inclusive time.
    """

    def __init__(self, pid: int, path: Path, rate: int = 200) -> None:
        self.pid, self.path, self.rate = pid, path, rate
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        beside = Path(sys.executable).with_name("py-spy")
        return str(beside) if beside.exists() else shutil.which("py-spy")

    def __enter__(self) -> PySpy:
        tool = self.available()
        if tool is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self._process = subprocess.Popen(
            [
                tool,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)

    def top(self, count: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(own, inclusive) shares of samples for the busiest functions."""
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, number = line.rpartition(" ")
            if not stack or not number.isdigit():
                continue
            samples = int(number)
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            total += samples
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
        scale = 1.0 / max(1, total)
        return (
            [(name, n * scale) for name, n in own.most_common(count)],
            [(name, n * scale) for name, n in inclusive.most_common(count)],
        )


def command_line() -> str:
    """The command that ran this benchmark, to print next to its figures."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(ROOT)
    except ValueError:
        shown = script
    return shlex.join([".venv/bin/python", str(shown), *sys.argv[1:]])


def print_table(title: str, rows: Iterable[tuple[str, str]]) -> None:
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


def print_profile(spy: PySpy, label: str, package: str = "cmbtask_gateway") -> None:
    """Where a py-spy'd process spent its samples: own time, then inclusive time in ``package``."""
    own, _ = spy.top(15)
    print_table(f"{label}: own time (leaf frames), {spy.path}", _shares(own))
    ours = [(name, share) for name, share in spy.top(400)[1] if package in name][:15]
    print_table(f"{label}: inclusive time in {package}", _shares(ours))


def _shares(rows: list[tuple[str, float]]) -> list[tuple[str, str]]:
    return [(f"{share * 100:5.1f}%", name) for name, share in rows] or [("-", "no samples")]
