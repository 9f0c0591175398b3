"""Writes the generated CRD manifest: ``python -m cmbtask_protocol.crdgen [PATH]``.

Kept apart from ``crd`` so that running it does not import itself twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import yaml

from .crd import crd_manifest

__all__ = ["main", "render"]

_HEADER = "# Generated from cmbtask_protocol.crd by `python -m cmbtask_protocol.crdgen`; do not edit.\n"


def render(fmt: Literal["yaml", "json"] = "yaml") -> str:
    manifest = crd_manifest()
    if fmt == "json":
        return json.dumps(manifest, indent=2) + "\n"
    return _HEADER + yaml.safe_dump(manifest, sort_keys=False, width=100)


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
