"""The one place where the command line writes for people to read.

Library code logs through structlog; only the ``cmbtask`` command's own
output (URLs, tokens, live task output) comes through here.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

__all__ = ["console", "say", "warn"]

console = Console(highlight=False)
_errors = Console(stderr=True, highlight=False)


def say(text: Any, **options: Any) -> None:
    """A line on stdout (rich markup allowed unless ``markup=False``)."""
    console.print(text, **options)


def warn(text: Any, **options: Any) -> None:
    """A line on stderr."""
    _errors.print(text, **options)
