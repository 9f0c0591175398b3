"""``cmbtask``: run the parts, migrate the database, make tokens, watch and act on tasks."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .client_errors import ApiError
from .console import say, warn
from .settings import Settings
from .shell_commands import add_shell_commands
from .shell_logs import add_log_commands

__all__ = ["main"]


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in {
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "data_dir": getattr(args, "data_dir", None),
        }.items()
        if value is not None
    }
    return Settings(**overrides)


def _serve(settings: Settings, announce: bool) -> int:
    import uvicorn

    from .app import create_server_app
    from .logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = uvicorn.Config(
        create_server_app(settings, own_process=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws_per_message_deflate=False,  # costs 2.5-3x CPU per message on every client
        ws_max_size=settings.max_runner_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        backlog=4096,
        timeout_graceful_shutdown=5,
    )
    if announce:
        say(f"cmbtask is up at [bold]http://{_display_host(settings.host)}:{settings.port}[/bold]")
        say(f"  data: {settings.data_dir.resolve()}   API docs: /docs   stop: Ctrl-C")
    uvicorn.Server(config).run()
    return 0


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host


def cmd_up(args: argparse.Namespace) -> int:
    return _serve(_settings_from(args), announce=True)


def cmd_gateway(args: argparse.Namespace) -> int:
    return _serve(Settings(), announce=False)


def _exec_module(module: str, argv: Sequence[str]) -> int:
    # The runner and operator are separate components: run them as their own
    # programs instead of importing them into the gateway package.
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])


def cmd_runner(args: argparse.Namespace) -> int:
    return _exec_module("cmbtask_runner", args.rest)


def cmd_operator(args: argparse.Namespace) -> int:
    return _exec_module("cmbtask_operator", args.rest)


def cmd_db(args: argparse.Namespace) -> int:
    from .db import migrate

    url = _settings_from(args).resolved_database_url
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "base")
    say(migrate.current(url) or "(empty database)")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from . import token_commands

    return token_commands.run(args, _settings_from(args))


def cmd_submit(args: argparse.Namespace) -> int:
    from .terminal_client import submit

    return asyncio.run(submit(args))


def cmd_keys(args: argparse.Namespace) -> int:
    from .account_client import keys_command

    return keys_command(args)


def cmd_settings(args: argparse.Namespace) -> int:
    from .account_client import settings_command

    return settings_command(args)


def cmd_watch(args: argparse.Namespace) -> int:
    from .terminal_client import watch

    return asyncio.run(watch(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmbtask", description="Run CMBAgent tasks for many users at once.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_location(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, help="where the SQLite database and task dirs live")
        return p

    up = with_location(sub.add_parser("up", help="gateway + local runners + SQLite + UI in one process tree"))
    up.add_argument("--host", help="address to listen on (default: CMBTASK_HOST or 127.0.0.1)")
    up.add_argument("--port", type=int, help="port to listen on (default: CMBTASK_PORT or 8000)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("gateway", help="the gateway, configured by CMBTASK_* variables").set_defaults(
        func=cmd_gateway
    )
    for name, func in (("runner", cmd_runner), ("operator", cmd_operator)):
        p = sub.add_parser(name, help=f"the {name} component")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)
    db = with_location(sub.add_parser("db", help="schema migrations"))
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", help="target revision (default: head, or base to downgrade)")
    db.set_defaults(func=cmd_db)
    token = sub.add_parser("token", help="bearer tokens for token auth mode: create, list, revoke")
    _token_commands(token.add_subparsers(dest="action", required=True), with_location)
    token.set_defaults(func=cmd_token)
    _client_commands(sub)
    return parser


def _token_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_location: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    create = with_location(sub.add_parser("create", help="a new token; printed once, stored hashed"))
    create.add_argument("user", help="the user the new bearer token signs in as")
    create.add_argument(
        "--expires-in", type=float, metavar="DAYS", help="valid for this many days (default: no expiry)"
    )
    create.add_argument("--name", help='what it is for, shown by "token list" (e.g. laptop)')
    listing = with_location(sub.add_parser("list", help="tokens and their status; never the tokens"))
    listing.add_argument("user", nargs="?", help="only this user's tokens")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    revoke = with_location(sub.add_parser("revoke", help="stop a token working, also on open sockets"))
    revoke.add_argument("id", help='the token id from "token list" (or its first 8+ characters)')


def _client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def with_server(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--url",
            default=os.environ.get("CMBTASK_URL", "http://127.0.0.1:8000"),
            help="the gateway (default: CMBTASK_URL or %(default)s)",
        )
        p.add_argument(
            "--token", default=os.environ.get("CMBTASK_TOKEN"), help="bearer token (default: CMBTASK_TOKEN)"
        )
        return p

    submit = with_server(sub.add_parser("submit", help="submit a task and watch it"))
    submit.add_argument("prompt", nargs="?", default="", help="what the task should do")
    submit.add_argument("--session", help="an existing session id (default: a new one)")
    submit.add_argument("--engine", default="demo", help="demo, script or cmbagent (default: %(default)s)")
    submit.add_argument("--mode", default="planning-control", help="see /api/modes (default: %(default)s)")
    submit.add_argument(
        "--param", action="append", default=[], metavar="KEY=JSON", help="an engine parameter (repeatable)"
    )
    submit.add_argument("--timeout", type=float, help="seconds before the task is stopped as timed out")
    submit.add_argument("--max-cost-usd", type=float, help="stop the task (failed) once it has spent this")
    submit.add_argument("--max-tokens", type=int, help="stop the task (failed) past this many tokens")
    submit.add_argument("--retries", type=int, default=0, help="runs again if its runner dies (0-5)")
    submit.add_argument("--retry-backoff", type=float, help="seconds before a retry, doubled each time")
    submit.add_argument("--no-watch", action="store_true", help="print the task id and exit")
    submit.set_defaults(func=cmd_submit)
    watch = with_server(sub.add_parser("watch", help="live output of a session, with approvals"))
    watch.add_argument("session", help="the session id")
    watch.add_argument("--after", type=int, default=0, help="replay events after this seq (default: 0, all)")
    watch.add_argument("--until-done", action="store_true", help="exit when no task is left running")
    watch.set_defaults(func=cmd_watch)
    _account_commands(sub, with_server)
    add_shell_commands(sub, with_server)
    add_log_commands(sub, with_server)


def _account_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_server: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    keys = with_server(sub.add_parser("keys", help="your own LLM provider keys (set reads standard input)"))
    keys.add_argument("action", choices=["set", "list", "delete"])
    keys.add_argument("provider", nargs="?", help="openai, anthropic, gemini, mistral, perplexity")
    keys.set_defaults(func=cmd_keys)
    settings = with_server(sub.add_parser("settings", help="show or change your defaults for new tasks"))
    settings.add_argument("--max-cost-usd", type=float, help="default budget in US dollars per task")
    settings.add_argument("--max-tokens", type=int, help="default token budget per task")
    settings.add_argument("--clear-budget", action="store_true", help="remove the default budgets")
    settings.add_argument(
        "--prices", type=argparse.FileType("r"), help='JSON file: {"model": {"prompt_usd_per_mtok": …, …}}'
    )
    settings.set_defaults(func=cmd_settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ApiError as error:
        warn(f"[red]error:[/red] {error}", markup=True, soft_wrap=True)
        return error.exit_code
    except Exception as error:
        warn(f"[red]error:[/red] {error}")
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
