"""``cmbtask keys …`` and ``cmbtask settings``: a user's keys and defaults from a shell.

A key is read from standard input (a hidden prompt on a terminal), never
from the command line, where ``ps`` and shell history would show it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

import httpx

from .console import say
from .terminal_client import headers_for, raise_for

__all__ = ["keys_command", "settings_command"]


def _read_key(provider: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{provider} key (not echoed): ").strip()
    return sys.stdin.readline().strip()


def keys_command(args: argparse.Namespace) -> int:
    with httpx.Client(base_url=args.url, headers=headers_for(args.token), timeout=30) as http:
        if args.action == "list":
            response = http.get("/api/keys")
            raise_for(response)
            body = response.json()
            for item in body["items"]:
                say(f"{item['provider']:<12} {item['env_var']:<20} set {item['updated_at']}")
            if not body["items"]:
                say("no keys stored; providers: " + ", ".join(body["providers"]))
            return 0
        if not args.provider:
            raise RuntimeError(f"keys {args.action} needs a PROVIDER")
        if args.action == "set":
            value = _read_key(args.provider)
            if not value:
                raise RuntimeError("no key on standard input")
            raise_for(http.put(f"/api/keys/{args.provider}", json={"value": value}))
            say(f"stored the {args.provider} key")
        else:
            raise_for(http.delete(f"/api/keys/{args.provider}"))
            say(f"deleted the {args.provider} key")
    return 0


def settings_command(args: argparse.Namespace) -> int:
    with httpx.Client(base_url=args.url, headers=headers_for(args.token), timeout=30) as http:
        response = http.get("/api/settings")
        raise_for(response)
        current = response.json()
        changes = {
            "max_cost_usd": args.max_cost_usd,
            "max_tokens": args.max_tokens,
        }
        if args.prices is not None:
            changes["prices"] = json.loads(args.prices.read())
        if any(value is not None for value in changes.values()) or args.clear_budget:
            if args.clear_budget:
                current["max_cost_usd"] = current["max_tokens"] = None
            current.update({key: value for key, value in changes.items() if value is not None})
            response = http.put("/api/settings", json=current)
            raise_for(response)
            current = response.json()
    say(json.dumps(current, indent=2), markup=False)
    return 0
