"""Overhead of cmbtask on a real CMBAgent workflow.

The same scripted ``one-shot`` run (researcher agent, against the fake OpenAI
server from the tests) twice, side by side:

- direct: a plain Python process that imports cmbagent and calls
  ``one_shot`` (wall time from process start to exit);
- cmbtask: submitted to a real gateway (``cmbtask up`` with the local
  executor, SQLite), run by a runner process, followed over REST (wall time
  from submit to ``task.succeeded``).

Prints both wall times (median of ``--repeat`` runs), their ratio, and peak
RSS of the direct process and of the runner. Run it with the cmbagent venv:

    $(bash scripts/cmbagent.sh) bench/cmbagent_overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cmbagent.agent_scripts import AgentScript
from tests.cmbagent.driving import follow, submit
from tests.cmbagent.openai_server import running_server
from tests.support.gateway import GatewayProcess

PROMPT = "What is the temperature of the cosmic microwave background today?"
KEY = "sk-cmbtask-bench-000000000000"
# The direct run applies the same two fixes for 0.0.1.post30 the engine applies
# (reassigning Claude-default agents, creating chats/); without them it fails.
DIRECT = textwrap.dedent(
    """
    import sys, time
    started = time.perf_counter()
    from cmbtask_runner.engines.cmbagent.library import import_cmbagent
    cmbagent = import_cmbagent()
    imported = time.perf_counter()
    cmbagent.one_shot(sys.argv[1], agent="researcher", work_dir=sys.argv[2])
    print(f"BENCH import={imported - started:.3f} workflow={time.perf_counter() - imported:.3f}")
    """
)


def _env(url: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url, "CMBAGENT_MODEL": "gpt-4.1-2025-04-14"}


def run_direct(url: str, work: Path) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and in-process workflow seconds of one plain-Python run."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **_env(url)}
    started = time.perf_counter()
    with (work / "out.txt").open("wb") as out:
        child = subprocess.Popen([sys.executable, "-c", DIRECT, PROMPT, str(work / "out")], cwd=work,
                                 env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"direct run failed: {(work / 'out.txt').read_text()[-2000:]}")
    output = (work / "out.txt").read_text()
    workflow = float(output.split("BENCH import=")[1].split("workflow=")[1].split()[0])
    return wall, usage.ru_maxrss * 1024, workflow


class PeakRss:
    """Follows the gateway's children and keeps each one's peak RSS (VmHWM)."""

    def __init__(self, parent_pid: int) -> None:
        self.parent = psutil.Process(parent_pid)
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            for child in self.parent.children(recursive=True):
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) * 1024
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), peak)


def run_cmbtask(gateway: GatewayProcess) -> tuple[float, int, float]:
    """Wall seconds from submit to ``task.succeeded``, the runner's peak RSS, and
    seconds from ``task.started`` to the final event (the runner's own view)."""
    assert gateway.process is not None
    with gateway.client() as client, PeakRss(gateway.process.pid) as rss:
        started = time.perf_counter()
        run = submit(client, "one-shot", PROMPT, {"agent": "researcher"})
        follow(client, run, None, timeout_s=600)
        wall = time.perf_counter() - started
    if run.final["type"] != "task.succeeded":
        raise RuntimeError(f"cmbtask run ended {run.final}")
    inside = _seconds(run.of("task.started")[0]["ts"], run.final["ts"])
    return wall, max(rss.peaks.values(), default=0), inside


def _seconds(start: str, end: str) -> float:
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    direct: list[tuple[float, int, float]] = []
    through: list[tuple[float, int, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="cmbagent-bench-") as tmp,
        running_server(AgentScript()) as (url, _),
    ):
        root = Path(tmp)
        gateway = GatewayProcess(
            root / "gateway", f"sqlite+aiosqlite:///{root / 'cmbtask.db'}", CMBTASK_EXECUTOR="local",
            CMBTASK_RUNNER_COMMAND=json.dumps([sys.executable, "-m", "cmbtask_runner"]), **_env(url),
            CMBTASK_PROVIDER_KEYS_FALLBACK="true",
        ).start(timeout_s=60)  # fmt: skip
        try:
            for i in range(args.repeat):
                # Alternate which goes first, so warm caches favour neither.
                if i % 2:
                    through.append(run_cmbtask(gateway))
                direct.append(run_direct(url, root / f"direct{i}"))
                if not i % 2:
                    through.append(run_cmbtask(gateway))
        finally:
            gateway.stop()
    direct_s = statistics.median(w for w, _, _ in direct)
    through_s = statistics.median(w for w, _, _ in through)
    mib = 1024 * 1024
    direct_rss = max(r for _, r, _ in direct) / mib
    runner_rss = max(r for _, r, _ in through) / mib
    print(f"cmbagent one-shot (researcher) against the fake OpenAI server, median of {args.repeat}")
    print(f"  direct (plain python):    {direct_s:7.2f} s   peak RSS {direct_rss:7.1f} MiB")
    print(f"  through cmbtask (runner): {through_s:7.2f} s   peak RSS {runner_rss:7.1f} MiB")
    print(f"  ratio cmbtask/direct:     {through_s / direct_s:7.2f}")
    print(f"  runs direct:  {', '.join(f'{w:.2f}' for w, _, _ in direct)} s")
    print(f"  runs cmbtask: {', '.join(f'{w:.2f}' for w, _, _ in through)} s")
    workflow = statistics.median(x for _, _, x in direct)
    inside = statistics.median(x for _, _, x in through)
    print(f"  direct: one_shot() alone {workflow:.2f} s; cmbtask: task.started to final event {inside:.2f} s")


if __name__ == "__main__":
    main()
