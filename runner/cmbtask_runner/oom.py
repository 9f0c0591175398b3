"""The kernel's OOM-kill count for the cgroup this process runs in.

In a container the runner sees its own cgroup at /sys/fs/cgroup. When the
container goes over its memory limit the kernel kills its largest process,
which is usually a child (a script) rather than the runner: the count tells
the runner that a child it saw die of SIGKILL was the OOM killer's doing.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

__all__ = ["oom_kills"]

#: cgroup v2, then v1
COUNTERS = (Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control"))


def oom_kills(counters: tuple[Path, ...] = COUNTERS) -> int:
    """Processes the OOM killer has ended in this cgroup so far; 0 when unknown."""
    for path in counters:
        with suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0
