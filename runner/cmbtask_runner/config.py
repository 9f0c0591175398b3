"""What a runner needs to know at start: the runner process contract.

The local executor and the Kubernetes operator both start ``python -m
cmbtask_runner`` with ``CMBTASK_TASK_ID``, ``CMBTASK_GATEWAY_URL``,
``CMBTASK_TASK_TOKEN`` and ``CMBTASK_WORK_DIR``; command-line flags override
them (handy by hand). Everything else about the task comes from ``welcome``.
"""

from __future__ import annotations

import argparse
import os
import sys
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
        defaults = {
            "task_id": environ.get(ENV_TASK_ID),
            "gateway_url": environ.get(ENV_GATEWAY_URL),
            "work_dir": environ.get(ENV_WORK_DIR),
            "give_up_s": _seconds(environ, "CMBTASK_LINK_GIVE_UP_S", 900.0),
            "final_ack_s": _seconds(environ, "CMBTASK_FINAL_ACK_S", 300.0),
            "cancel_grace_s": _seconds(environ, "CMBTASK_CANCEL_GRACE_S", 3.0),
        }
        # A runner the fork server or the operator starts has no flags: building
        # an argparse parser for nothing was a fifth of its CPU before it connects.
        flags = sys.argv[1:] if argv is None else list(argv)
        args = _parse_flags(flags, defaults) if flags else argparse.Namespace(**defaults)
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


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {text!r}") from None


def _parse_flags(flags: Sequence[str], defaults: Mapping[str, object]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cmbtask-runner", description="Run one cmbtask task.")
    parser.add_argument("--task-id", default=defaults["task_id"])
    parser.add_argument("--gateway-url", default=defaults["gateway_url"])
    parser.add_argument("--work-dir", default=defaults["work_dir"])
    parser.add_argument("--give-up-s", type=float, default=defaults["give_up_s"])
    parser.add_argument("--final-ack-s", type=float, default=defaults["final_ack_s"])
    parser.add_argument("--cancel-grace-s", type=float, default=defaults["cancel_grace_s"])
    return parser.parse_args(flags)
