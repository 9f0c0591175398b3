"""JSON Schema export: the UI's TypeScript types are generated from this.

``python -m cmbtask_protocol.schema [PATH]`` writes the document (stdout when
no path is given). A test fails when the committed file drifts from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from . import accounts, api, client, engines, events, runner

__all__ = ["json_schema", "main"]


def _models() -> dict[str, Any]:
    named: dict[str, Any] = {}
    for module in (events, api, accounts, client, runner):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseModel):
                named[name] = obj
    named["ClientCommand"] = client.ClientCommand
    named["RunnerInbound"] = runner.RunnerInbound
    named["RunnerOutbound"] = runner.RunnerOutbound
    named["EnginesDescription"] = engines.EnginesDescription
    return named


def json_schema() -> dict[str, Any]:
    """One document whose ``$defs`` hold every wire model, sorted by name."""
    defs: dict[str, Any] = {}
    for name, model in sorted(_models().items()):
        schema = TypeAdapter(model).json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "cmbtask.protocol.v1",
        "title": "cmbtask wire protocol",
        "event_types": sorted(events.EVENT_PAYLOADS),
        #: the payload model of each event type, for the UI's discriminated union
        "event_payloads": {
            str(name): model.__name__ for name, model in sorted(events.EVENT_PAYLOADS.items())
        },
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
