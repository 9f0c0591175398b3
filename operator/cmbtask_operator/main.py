"""Entry point: ``python -m cmbtask_operator`` (and ``cmbtask operator``).

Builds the settings, the handler registry and structured logging, then runs
kopf until SIGTERM. ``run_async`` is what the e2e tests and the benchmark
drive in-process when they want a stop flag.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import kopf
import structlog

from .handlers import OperatorMemo, registry
from .settings import OperatorSettings

__all__ = ["main", "run", "run_async"]


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, for our events and kopf's alike."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


async def run_async(
    settings: OperatorSettings | None = None,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    config = settings or OperatorSettings()
    await kopf.operator(
        registry=registry,
        memo=OperatorMemo(config=config),
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.standalone,
        peering_name=config.peering_name,
        priority=config.priority,
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def run() -> None:
    configure_logging()
    asyncio.run(run_async())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        sys.stderr.write("usage: python -m cmbtask_operator  (configured by CMBTASK_OPERATOR_* variables)\n")
        return 0
    run()
    return 0
