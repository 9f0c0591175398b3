"""The PNG of ``load_sweep.py``: delivery latency and server cores against offered events/s.

Kept apart so that the sweep runs without matplotlib (the ``bench`` extra)
when no plot is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from load_sweep import Point

__all__ = ["plot"]

STYLES = {"gateway": ("tab:blue", "o"), "raw": ("tab:gray", "s")}


def _series(points: Sequence[Point]) -> dict[str, list[Point]]:
    by_server: dict[str, list[Point]] = {}
    for point in points:
        by_server.setdefault(point.server, []).append(point)
    return by_server


def plot(points: Sequence[Point], path: Path, caption: str) -> None:
    figure, (latency, cores) = plt.subplots(
        2, 1, figsize=(8, 7.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
    )
    for server, series in _series(points).items():
        color, marker = STYLES["gateway" if server.startswith("gateway") else "raw"]
        offered = [point.offered for point in series]
        latency.plot(offered, [p.p99_ms for p in series], color=color, marker=marker, label=f"{server} p99")
        latency.plot(
            offered,
            [p.p50_ms for p in series],
            color=color,
            marker=marker,
            linestyle="--",
            fillstyle="none",
            label=f"{server} p50",
        )
        cores.plot(offered, [p.cores for p in series], color=color, marker=marker, label=f"{server}: used")
        waiting = [p.waiting for p in series]
        cores.plot(offered, waiting, color=color, linestyle=":", label=f"{server}: waiting for a CPU")
    latency.set_yscale("log")
    latency.set_ylabel("delivery latency, runner send → client receive (ms, log)")
    latency.axhline(50, color="tab:red", linewidth=0.8, linestyle=":", label="50 ms (issue 12's p99 goal)")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=8, loc="upper left")
    latency.set_title("cmbtask gateway: delivery latency against offered load", fontsize=11)
    ceiling = "1 core (one event loop's ceiling)"
    cores.axhline(1.0, color="tab:red", linewidth=0.8, linestyle=":", label=ceiling)
    cores.set_ylabel("server CPU (cores)")
    tallest = max((max(p.cores, p.waiting) for p in points), default=1.0)
    cores.set_ylim(0, max(1.0, tallest) * 1.45)  # room for the legend above the lines
    cores.set_xscale("log")
    cores.set_xticks([p.offered for p in points], [f"{p.offered:,.0f}" for p in points])
    cores.minorticks_off()
    cores.set_xlabel("offered load (events/s sent by all runners together, log)")
    cores.grid(True, alpha=0.3)
    cores.legend(fontsize=7, loc="upper left", ncol=2)
    figure.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7, wrap=True)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
