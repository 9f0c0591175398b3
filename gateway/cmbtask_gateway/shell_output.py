"""What the shell commands share: one HTTP client, tables, JSON, short ids."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from .client_errors import ApiError
from .console import say
from .terminal_client import headers_for, raise_for

__all__ = ["FULL_ID_CHARS", "by_prefix", "client", "get_json", "line", "show_json", "stamp", "table"]

#: ids are UUIDs (36 characters, or 32 without dashes for approvals);
#: anything shorter is taken as the first characters of one
FULL_ID_CHARS = 32
MIN_PREFIX_CHARS = 8


def client(args: argparse.Namespace) -> httpx.Client:
    return httpx.Client(base_url=args.url, headers=headers_for(args.token), timeout=30)


def get_json(http: httpx.Client, path: str, **params: Any) -> Any:
    response = http.get(path, params={key: value for key, value in params.items() if value is not None})
    raise_for(response)
    return response.json()


def line(text: str, end: str = "\n") -> None:
    """Text as it is: no markup, no emoji codes, no wrapping at 80 columns
    when stdout is a pipe (scripts read whole lines)."""
    say(text, markup=False, soft_wrap=True, emoji=False, end=end)


def show_json(value: Any) -> None:
    line(json.dumps(value, indent=2))


def stamp(moment: str | None) -> str:
    """``2026-12-02 13:05`` from an ISO timestamp of the API (which is UTC)."""
    return moment[:16].replace("T", " ") if moment else "-"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Plain aligned columns, whole ids whatever the terminal's width, so
    that ``awk '{print $1}'`` reads them back."""
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)
    line("\n".join(text.rstrip() for text in lines))


def _cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = " ".join(text.split())  # one line per row, whatever a title holds
    return text if len(text) <= 60 else text[:59] + "…"


def by_prefix(given: str, candidates: Iterator[str], what: str) -> str:
    """The one id among ``candidates`` that starts with ``given``."""
    if len(given) >= FULL_ID_CHARS:
        return given
    if len(given) < MIN_PREFIX_CHARS:
        raise ApiError(404, f"{what} {given!r}: give the whole id or at least {MIN_PREFIX_CHARS} characters")
    found = sorted({candidate for candidate in candidates if candidate.startswith(given)})
    if len(found) != 1:
        why = "matches no" if not found else f"matches {len(found)}"
        raise ApiError(404, f"{given!r} {why} {what} ids")
    return found[0]
