"""The pure parts of the sizing work: the model's arithmetic and the sweep's rate schedule.

The benches themselves drive real processes and print figures; what is
checked here is what turns those figures into the doc's counts.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load_sweep import parse_rates, rate_schedule
from sizing import MEASURED, Assumptions, Measured, render, size

ROUND = Measured(
    gateway_ingest_us=1000.0,
    gateway_delivery_us=100.0,
    client_rss_kb=40.0,
    clients_proven=10_000,
    pg_us_per_event=200.0,
    pg_bytes_per_event=500.0,
    local_starts_per_s=10.0,
    k8s_starts_per_s=2.0,
    operator_pods_per_s=5.0,
    runner_rss_mb=300.0,
)


def test_load_follows_from_tasks_users_and_headroom() -> None:
    sizing = size(ROUND, Assumptions())
    assert sizing.events_s == 5_000  # 1,000 tasks x 5 events/s
    assert sizing.peak_events_s == 10_000
    assert sizing.deliveries_s == 20_000  # two watchers per task
    assert sizing.connections == 6_000  # 10,000 users x 2 clients x 30 %
    # 10,000 x 1 ms + 20,000 x 0.1 ms = 12 cores; at half a core each: 24 replicas
    assert sizing.replica_cores_needed == pytest.approx(12.0)
    assert sizing.replicas_for_cpu == 24
    assert sizing.replicas == 25  # one spare
    assert sizing.pg_cores == pytest.approx(4.0)  # 10,000 x 200 µs at 50 %
    assert sizing.pg_connections == 25 * 30
    assert sizing.pg_gb_per_day == pytest.approx(5_000 * 500 * 3600 * 8 / 1e9)  # 8 busy hours
    # 1,000 x 300 MB in 64 GB nodes kept half full: 10 nodes, whose 20 pods/s the operator caps at 5
    assert sizing.runner_nodes == 10
    assert sizing.k8s_start_all_s == 200.0
    assert sizing.local_start_all_s == 100.0


def test_connections_decide_when_memory_is_the_limit() -> None:
    # 2 GiB / 400 KB = 5,242 clients, half of it usable: 2,621 per replica -> 3 for 6,000
    sizing = size(
        replace(ROUND, client_rss_kb=400.0, gateway_ingest_us=1.0, gateway_delivery_us=1.0), Assumptions()
    )
    assert sizing.clients_per_replica == pytest.approx(2048 * 1024 / 400 * 0.5)
    assert sizing.replicas_for_connections == 3
    assert sizing.replicas_for_cpu == 1
    assert sizing.replicas == 4


def test_one_node_starts_pods_at_its_own_rate() -> None:
    sizing = size(replace(ROUND, runner_rss_mb=30.0), Assumptions())
    assert sizing.runner_nodes == 1
    assert sizing.k8s_start_all_s == 500.0  # 1,000 at 2 pods/s: the node, not the operator


def test_never_more_clients_per_replica_than_were_proven() -> None:
    sizing = size(replace(ROUND, client_rss_kb=1.0), Assumptions())
    assert sizing.clients_per_replica == 5_000  # 10,000 proven, at 50 %


def test_render_lists_every_input_and_output() -> None:
    text = render(MEASURED, Assumptions())
    for name in ("gateway_ingest_us", "fraction_connected", "replicas_for_cpu", "pg_gb_per_day"):
        assert f"`{name}`" in text


def test_rate_schedule_spreads_each_total_over_the_sessions() -> None:
    loads = rate_schedule([100.0, 1000.0], sessions=50, paced_s=4.0, text_bytes=80)
    assert [load.rate for load in loads] == [2.0, 20.0]
    assert [load.paced for load in loads] == [8, 80]  # events per session in the round
    assert all(load.burst == 0 for load in loads)


def test_rates_must_be_positive_and_increasing() -> None:
    assert parse_rates("100, 250,1e3") == [100.0, 250.0, 1000.0]
    for bad in ("", "0,10", "100,50", "10,10"):
        with pytest.raises(ValueError):
            parse_rates(bad)
