"""The sizing model of ``docs/sizing.md``: measured costs and assumptions in, replica and database counts out.

    .venv/bin/python bench/sizing.py                       # the doc's figures
    .venv/bin/python bench/sizing.py --gateway-ingest-us 900 --users 20000   # after re-measuring

Every input is a flag whose default is the figure the doc quotes (with the
bench command that produced it there), so re-measuring means passing the new
figure and pasting the printed tables back into the doc. The arithmetic is in
``size``, a pure function, so the test suite checks it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields

__all__ = ["Assumptions", "Measured", "Sizing", "render", "size"]


@dataclass(frozen=True)
class Measured:
    """Per-unit costs measured by the benches (see docs/sizing.md for each command)."""

    gateway_ingest_us: float  # gateway CPU per stored event, no subscriber (pg_ingest.py)
    gateway_delivery_us: float  # gateway CPU per delivery to one client (load_sweep.py minus the above)
    client_rss_kb: float  # gateway memory per connected idle client (gateway_fanout.py --shape idle)
    clients_proven: int  # connected clients one replica has been shown to hold
    pg_us_per_event: float  # PostgreSQL backend CPU per stored event (pg_ingest.py)
    pg_bytes_per_event: float  # events table bytes per row, indexes included (pg_ingest.py)
    local_starts_per_s: float  # runner processes started per second on one machine (tasks_local.py)
    k8s_starts_per_s: float  # runner pods Running per second on one node (operator_apply.py)
    operator_pods_per_s: float  # CmbTasks the operator turned into pods per second (operator_apply.py)
    runner_rss_mb: float  # peak RSS of one CMBAgent runner (cmbagent_overhead.py)


@dataclass(frozen=True)
class Assumptions:
    """What the deployment is and how much room it keeps; none of these is measured."""

    users: int = 10_000
    concurrent_tasks: int = 1_000
    events_per_task_s: float = 5.0  # a busy CMBAgent task, averaged over a minute
    burst_factor: float = 2.0  # peak minute over average minute
    clients_per_user: float = 2.0  # a browser tab and a shell
    fraction_connected: float = 0.3  # of users, at the busiest hour
    watchers_per_task: float = 2.0  # clients subscribed to a running task's session
    replica_cores: float = 1.0  # one event loop: a replica uses at most one core
    replica_memory_mb: float = 2048.0  # the replica's memory limit
    utilisation: float = 0.5  # of a replica's core and memory, at peak
    spare_replicas: int = 1  # survive losing one (its clients move to the others)
    pg_utilisation: float = 0.5  # of the database server's cores, at peak
    pg_pool_per_replica: int = 30  # the gateway's pool_size + max_overflow
    node_memory_gb: float = 64.0  # memory of one runner node
    busy_hours_per_day: float = 8.0  # hours a day at that concurrency (for the events table's growth)


@dataclass(frozen=True)
class Sizing:
    """Derived load and counts; ``replicas`` already includes the spare ones."""

    events_s: float
    peak_events_s: float
    deliveries_s: float
    connections: float
    replica_cores_needed: float
    replicas_for_cpu: int
    clients_per_replica: float
    replicas_for_connections: int
    replicas: int
    pg_cores: float
    pg_connections: int
    pg_gb_per_day: float
    runner_nodes: int
    local_start_all_s: float
    k8s_start_all_s: float


def size(m: Measured, a: Assumptions) -> Sizing:
    events = a.concurrent_tasks * a.events_per_task_s
    peak = events * a.burst_factor
    deliveries = peak * a.watchers_per_task
    connections = a.users * a.clients_per_user * a.fraction_connected
    cores = (peak * m.gateway_ingest_us + deliveries * m.gateway_delivery_us) / 1e6
    for_cpu = math.ceil(cores / (a.replica_cores * a.utilisation))
    per_replica = min(m.clients_proven, a.replica_memory_mb * 1024 / m.client_rss_kb) * a.utilisation
    for_connections = math.ceil(connections / per_replica)
    replicas = max(for_cpu, for_connections, 1) + a.spare_replicas
    nodes = math.ceil(a.concurrent_tasks * m.runner_rss_mb / (a.node_memory_gb * 1024 * a.utilisation))
    return Sizing(
        events_s=events,
        peak_events_s=peak,
        deliveries_s=deliveries,
        connections=connections,
        replica_cores_needed=cores,
        replicas_for_cpu=for_cpu,
        clients_per_replica=per_replica,
        replicas_for_connections=for_connections,
        replicas=replicas,
        pg_cores=peak * m.pg_us_per_event / 1e6 / a.pg_utilisation,
        pg_connections=replicas * a.pg_pool_per_replica,
        pg_gb_per_day=events * m.pg_bytes_per_event * 3600 * a.busy_hours_per_day / 1e9,
        runner_nodes=nodes,
        local_start_all_s=a.concurrent_tasks / m.local_starts_per_s,
        # Nodes start their pods in parallel; the one operator creates them at its own rate.
        k8s_start_all_s=a.concurrent_tasks / min(m.k8s_starts_per_s * nodes, m.operator_pods_per_s),
    )


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:,}"


def derivation(m: Measured, a: Assumptions, s: Sizing) -> dict[str, str]:
    """Each derived figure's arithmetic, with the numbers filled in, for the doc's table."""
    n = _number
    return {
        "events_s": f"{n(a.concurrent_tasks)} tasks x {n(a.events_per_task_s)} events/s",
        "peak_events_s": f"{n(s.events_s)} x burst factor {n(a.burst_factor)}",
        "deliveries_s": f"{n(s.peak_events_s)} x {n(a.watchers_per_task)} watchers per task",
        "connections": f"{n(a.users)} users x {n(a.clients_per_user)} clients"
        f" x {n(a.fraction_connected)} connected",
        "replica_cores_needed": f"({n(s.peak_events_s)} x {n(m.gateway_ingest_us)} µs"
        f" + {n(s.deliveries_s)} x {n(m.gateway_delivery_us)} µs) / 10⁶",
        "replicas_for_cpu": f"ceil({n(s.replica_cores_needed)} / ({n(a.replica_cores)} core"
        f" x {n(a.utilisation)}))",
        "clients_per_replica": f"min({n(m.clients_proven)} proven, {n(a.replica_memory_mb)} MB"
        f" / {n(m.client_rss_kb)} KB) x {n(a.utilisation)}",
        "replicas_for_connections": f"ceil({n(s.connections)} / {n(s.clients_per_replica)})",
        "replicas": f"max({s.replicas_for_cpu}, {s.replicas_for_connections}) + {a.spare_replicas} spare",
        "pg_cores": f"{n(s.peak_events_s)} x {n(m.pg_us_per_event)} µs / 10⁶ / {n(a.pg_utilisation)}",
        "pg_connections": f"{s.replicas} replicas x {a.pg_pool_per_replica}",
        "pg_gb_per_day": f"{n(s.events_s)} x {n(m.pg_bytes_per_event)} B x 3,600 s"
        f" x {n(a.busy_hours_per_day)} h / 10⁹",
        "runner_nodes": f"ceil({n(a.concurrent_tasks)} x {n(m.runner_rss_mb)} MB"
        f" / ({n(a.node_memory_gb)} GB x {n(a.utilisation)}))",
        "local_start_all_s": f"{n(a.concurrent_tasks)} / {n(m.local_starts_per_s)} per s, one machine",
        "k8s_start_all_s": f"{n(a.concurrent_tasks)} / min({n(m.k8s_starts_per_s)} per s x {s.runner_nodes}"
        f" nodes, operator {n(m.operator_pods_per_s)} per s)",
    }


def _table(title: str, values: dict[str, object], how: dict[str, str] | None = None) -> str:
    lines = [f"| {title} | value |" + (" arithmetic |" if how else ""), "|---|---|" + ("---|" if how else "")]
    for name, value in values.items():
        lines.append(f"| `{name}` | {_number(value)} |" + (f" {how[name]} |" if how else ""))
    return "\n".join(lines)


def render(m: Measured, a: Assumptions) -> str:
    """The three tables of the doc: measured inputs, assumptions, derived counts with their arithmetic."""
    sizing = size(m, a)
    return "\n\n".join(
        [
            _table("measured input", asdict(m)),
            _table("assumption", asdict(a)),
            _table("derived", asdict(sizing), derivation(m, a, sizing)),
        ]
    )


#: the figures docs/sizing.md quotes, with the commands there
MEASURED = Measured(
    gateway_ingest_us=480.0,
    gateway_delivery_us=169.0,
    client_rss_kb=46.3,
    clients_proven=10_000,
    pg_us_per_event=144.0,
    pg_bytes_per_event=618.0,
    local_starts_per_s=3.3,
    k8s_starts_per_s=2.0,
    operator_pods_per_s=6.1,
    runner_rss_mb=312.0,
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for group, defaults in (("measured", MEASURED), ("assumed", Assumptions())):
        for spec in fields(defaults):
            value = getattr(defaults, spec.name)
            parser.add_argument(_flag(spec.name), type=type(value), default=value, help=f"{group} ({value})")
    args = vars(parser.parse_args())
    measured = Measured(**{f.name: args[f.name] for f in fields(Measured)})
    assumed = Assumptions(**{f.name: args[f.name] for f in fields(Assumptions)})
    print(render(measured, assumed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
