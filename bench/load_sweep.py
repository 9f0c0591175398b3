"""Delivery latency against offered load: gateway_fanout's paced shape at several rates.

    .venv/bin/python bench/load_sweep.py [--rates 100,250,500,1000,2000,3000]
        [--clients 200] [--sessions 50] [--paced-s 5] [--no-raw]
        [--database-url postgresql+asyncpg://USER:PASS@HOST:PORT/DB]
        [--png docs/sizing-latency.png]

Each rate is the *total* events/s the simulated runners offer, spread evenly
over ``--sessions`` sessions (so each client receives ``rate / sessions``
events/s). For every rate a fresh gateway process (``cmbtask up``, no executor)
runs one paced round of ``gateway_fanout.py`` — same runners, same client
fleet, same exactly-once checks, no burst — on one database for the whole
sweep (SQLite, or a fresh database on the given PostgreSQL server). The raw
``websockets`` server of ``raw_broadcast.py`` then runs the same rate, as the
floor of what the stack could do. Prints one row per rate (latency p50/p99,
deliveries/s, the gateway's cores, the load average) and draws the PNG the
sizing model in ``docs/sizing.md`` shows. Exit status 1 if the gateway lost,
duplicated or misrouted anything at any rate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit import ROOT, command_line, percentile
from gateway_fanout import Load, Round, gateway_round, raw_round

sys.path.insert(0, str(ROOT))

from tests.support.databases import fresh_database

DEFAULT_RATES = (100.0, 250.0, 500.0, 1000.0, 2000.0, 3000.0)


def parse_rates(text: str) -> list[float]:
    """``"100,250,1e3"`` → ``[100.0, 250.0, 1000.0]``: positive, increasing, no repeats."""
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError(f"rates must be positive numbers, got {text!r}")
    if any(later <= earlier for earlier, later in itertools.pairwise(rates)):
        raise ValueError(f"rates must increase, got {text!r}")
    return rates


def rate_schedule(total_rates: Sequence[float], sessions: int, paced_s: float, text_bytes: int) -> list[Load]:
    """One paced-only round per total rate, each session offered an equal share."""
    if sessions < 1:
        raise ValueError("at least one session")
    return [
        Load(rate=total / sessions, paced_s=paced_s, burst=0, text_bytes=text_bytes) for total in total_rates
    ]


@dataclass(frozen=True)
class Point:
    """One rate of the sweep, for one server."""

    server: str
    offered: float  # events/s offered by all runners together
    p50_ms: float
    p99_ms: float
    max_ms: float
    deliveries_per_s: float
    cores: float  # server CPU seconds per second of the paced phase
    waiting: float  # seconds per second the server was ready to run but had no CPU
    cpu_per_event_us: float  # server CPU per offered (stored) event
    clean: bool  # nothing lost, duplicated or misrouted
    load_average: float

    @classmethod
    def of(cls, round_: Round, offered: float) -> Point:
        latencies = round_.latencies("paced")
        window = round_.windows_s.get("paced-cpu", 0.0)
        used = round_.cpu_s.get("paced", {})
        seconds, waited = used.get("server", float("nan")), used.get("server.waited", float("nan"))
        events = round_.load.paced * round_.channels
        return cls(
            server=round_.name,
            offered=offered,
            p50_ms=percentile(latencies, 0.5) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            max_ms=max(latencies, default=float("nan")) * 1000,
            deliveries_per_s=round_.deliveries_per_s("paced"),
            cores=seconds / window if window else float("nan"),
            waiting=waited / window if window else float("nan"),
            cpu_per_event_us=seconds / events * 1e6 if events else float("nan"),
            clean=round_.lost() == round_.duplicated() == round_.misrouted == 0 and not round_.connect_failed,
            load_average=os.getloadavg()[0],
        )


async def sweep(args: argparse.Namespace) -> list[Point]:
    schedule = rate_schedule(args.rates, args.sessions, args.paced_s, args.text_bytes)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="cmbtask-sweep-") as tmp:
        root = Path(tmp)
        if args.database_url:
            os.environ["CMBTASK_TEST_PG_URL"] = args.database_url
        with fresh_database("postgresql" if args.database_url else "sqlite", root) as url:
            for number, (offered, load) in enumerate(zip(args.rates, schedule, strict=True)):
                round_ = await gateway_round(args, load, root / f"data-{number}", url)
                points.append(Point.of(round_, offered))
                _print_point(points[-1])
                if not args.no_raw:
                    points.append(Point.of(await raw_round(args, load, args.clients), offered))
                    _print_point(points[-1])
    return points


HEADER = (
    f"{'server':<22} {'offered ev/s':>12} {'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    f"{'cores':>6} {'+wait':>6} {'µs/event':>9} {'clean':>5} {'load':>5}"
)


def _print_point(point: Point) -> None:
    print(
        f"{point.server:<22} {point.offered:>12,.0f} {point.deliveries_per_s:>9,.0f} {point.p50_ms:>8.1f} "
        f"{point.p99_ms:>8.1f} {point.max_ms:>8.1f} {point.cores:>6.2f} "
        f"{point.waiting:>6.2f} {point.cpu_per_event_us:>9.0f} "
        f"{'yes' if point.clean else 'NO':>5} {point.load_average:>5.1f}",
        flush=True,
    )


def _commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=list(DEFAULT_RATES),
        help="total events/s offered, comma-separated, increasing",
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--paced-s", type=float, default=5.0, help="seconds each rate is offered")
    parser.add_argument("--text-bytes", type=int, default=80)
    parser.add_argument("--no-raw", action="store_true", help="skip the raw websockets baseline")
    parser.add_argument("--database-url", help="a PostgreSQL server URL (a fresh database is made on it)")
    parser.add_argument("--png", type=Path, help="write the latency-against-load plot here")
    return parser


def main() -> int:
    args = _parser().parse_args()
    args.profile = None  # gateway_round's py-spy hook: not in a sweep
    load_before = os.getloadavg()[0]
    print(HEADER)
    points = asyncio.run(sweep(args))
    backend = "PostgreSQL" if args.database_url else "SQLite"
    caption = (
        f"{args.clients} clients on {args.sessions} sessions, {backend}, {args.paced_s:g} s per rate; "
        f"commit {_commit()}; load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(f"\n{caption}\ncommand: {command_line()}")
    if args.png is not None:
        from sweep_plot import plot

        plot(points, args.png, caption)
        print(f"plot: {args.png}")
    return 0 if all(point.clean for point in points if point.server.startswith("gateway")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
