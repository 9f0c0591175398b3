"""What a runner needs to know at start: the runner process contract.

The local executor and the Kubernetes operator both start ``python -m
cmbtask_runner`` with ``CMBTASK_TASK_ID``, ``CMBTASK_GATEWAY_URL``,
``CMBTASK_TASK_TOKEN`` and ``CMBTASK_WORK_DIR``; command-line flags override
them (handy by hand). Everything else about the task comes from ``welcome``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cmbtask_protocol import ENV_GATEWAY_URL, ENV_TASK_ID, ENV_TASK_TOKEN, ENV_WORK_DIR

__all__ = ["ConfigError", "RunnerConfig"]


class ConfigError(Exception):
    """The runner was started without what it needs."""


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    task_id: str
    gateway_url: str
    token: str
    work_dir: Path
    #: give up (exit non-zero) when the gateway has been unreachable this long
    give_up_s: float = 900.0
    #: how long the final event may wait for the gateway's ack before exiting anyway
    final_ack_s: float = 300.0
    #: how long a cancelled engine gets to stop before the runner reports and exits
    cancel_grace_s: float = 3.0

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> RunnerConfig:
        environ = os.environ if env is None else env
        parser = argparse.ArgumentParser(prog="cmbtask-runner", description="Run one cmbtask task.")
        parser.add_argument("--task-id", default=environ.get(ENV_TASK_ID))
        parser.add_argument("--gateway-url", default=environ.get(ENV_GATEWAY_URL))
        parser.add_argument("--work-dir", default=environ.get(ENV_WORK_DIR))
        parser.add_argument(
            "--give-up-s", type=float, default=float(environ.get("CMBTASK_LINK_GIVE_UP_S", 900))
        )
        parser.add_argument(
            "--final-ack-s", type=float, default=float(environ.get("CMBTASK_FINAL_ACK_S", 300))
        )
        parser.add_argument(
            "--cancel-grace-s", type=float, default=float(environ.get("CMBTASK_CANCEL_GRACE_S", 3))
        )
        args = parser.parse_args(argv)
        # The token stays out of argv on purpose: argv is visible to every user of the machine.
        token = environ.get(ENV_TASK_TOKEN, "")
        missing = [
            name
            for name, value in (
                (ENV_TASK_ID, args.task_id),
                (ENV_GATEWAY_URL, args.gateway_url),
                (ENV_TASK_TOKEN, token),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}")
        work_dir = Path(args.work_dir or Path.cwd()).resolve()
        return cls(
            task_id=args.task_id,
            gateway_url=args.gateway_url,
            token=token,
            work_dir=work_dir,
            give_up_s=args.give_up_s,
            final_ack_s=args.final_ack_s,
            cancel_grace_s=args.cancel_grace_s,
        )
