"""A small Dockerfile reader, and a replayer for its build stages.

The images themselves are built by ``docker build`` (scripts/images.sh) for
the Kubernetes suite. This module serves the fast checks that need no Docker
engine: the Dockerfile read statically, and its RUN steps run outside Docker,
container paths mapped into a sandbox directory; because every RUN uses only
relative paths and variables (a rule the tests check), the commands run are
the very strings in the Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["Instruction", "Stage", "parse", "replay"]


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def flags(self) -> dict[str, str]:
        """``--from=x --chown=u`` style options at the start of the arguments."""
        found: dict[str, str] = {}
        for word in self.args.split():
            match = re.fullmatch(r"--([a-z-]+)=(\S+)", word)
            if match is None:
                break
            found[match.group(1)] = match.group(2)
        return found

    def operands(self) -> list[str]:
        """The arguments without leading ``--flag=value`` options (exec form too)."""
        text = self.args.strip()
        if text.startswith("["):
            return [str(item) for item in json.loads(text)]
        return [word for word in shlex.split(text) if not word.startswith("--")]


@dataclass(slots=True)
class Stage:
    name: str
    #: the base image; a ``${ARG}`` base resolved to that global ARG's default
    base: str
    line: int
    #: the global build argument the base came from, if any
    base_arg: str | None = None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    return lines


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile in order. Before the first FROM only global
    ARGs with defaults may stand; a ``FROM ${NAME}`` base resolves to NAME's default."""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line, logical in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            found = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", words[0])
            if found and found.group(1) not in global_args:
                raise ValueError(f"line {line}: FROM {words[0]} names no global ARG with a default")
            base = global_args[found.group(1)] if found else words[0]
            stages.append(Stage(name=name, base=base, line=line, base_arg=found.group(1) if found else None))
            continue
        if not stages:
            key, equals, default = args.strip().partition("=")
            if keyword != "ARG" or not equals:
                raise ValueError(f"line {line}: {keyword} before the first FROM (only ARG NAME=default)")
            global_args[key] = default.strip('"')
            continue
        stages[-1].instructions.append(Instruction(keyword, args.strip(), line))
    return stages


def chain(stages: list[Stage], target: str) -> list[Stage]:
    """The target stage and the stages it is built on, base first."""
    by_name = {stage.name: stage for stage in stages}
    result: list[Stage] = []
    current: Stage | None = by_name[target]
    while current is not None:
        result.insert(0, current)
        current = by_name.get(current.base)
    return result


# ---- replay -----------------------------------------------------------------------


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


def _parse_env(args: str) -> list[tuple[str, str]]:
    words = shlex.split(args)
    if len(words) == 2 and "=" not in words[0]:
        return [(words[0], words[1])]
    return [tuple(word.split("=", 1)) for word in words]  # type: ignore[misc]


class _Sandbox:
    """Container paths under ``root``; ``PATH`` entries and values that look
    like container paths are mapped there too."""

    def __init__(self, root: Path, repo: Path, tools: Path) -> None:
        self.root = root
        self.repo = repo
        self.env: dict[str, str] = {"PATH": f"{tools}:{os.environ['PATH']}"}
        self.cwd = root

    def host(self, container_path: str) -> Path:
        return self.root / PurePosixPath(container_path).relative_to("/")

    def _map_value(self, value: str) -> str:
        # Literal container paths move into the sandbox; expanded variables
        # (``$PATH``) already hold host or sandbox paths and stay as they are.
        parts = value.split(":")
        return ":".join(
            str(self.host(part)) if part.startswith("/") else _expand(part, self.env) for part in parts
        )

    def apply(self, item: Instruction) -> None:
        if item.keyword == "ENV":
            for key, value in _parse_env(item.args):
                self.env[key] = self._map_value(value)
        elif item.keyword == "ARG":
            key, _, default = item.args.partition("=")
            self.env.setdefault(key, default.strip('"'))
        elif item.keyword == "WORKDIR":
            self.cwd = self.host(item.args)
            self.cwd.mkdir(parents=True, exist_ok=True)
        elif item.keyword == "COPY" and "from" not in item.flags():
            self._copy(item.operands())
        elif item.keyword == "RUN":
            self._run(item)

    def _copy(self, operands: list[str]) -> None:
        *sources, dest = operands
        target = self.cwd / dest if not dest.startswith("/") else self.host(dest)
        for source in sources:
            origin = self.repo / source
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True, ignore=_ignored)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)

    def _run(self, item: Instruction) -> None:
        env = {**os.environ, **self.env}
        completed = subprocess.run(
            ["nice", "-n", "10", "sh", "-ec", item.args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if completed.returncode != 0:
            raise AssertionError(
                f"RUN at line {item.line} failed ({completed.returncode}): {item.args}\n"
                f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
            )


def _ignored(directory: str, names: list[str]) -> set[str]:
    # What .dockerignore keeps out of the build context.
    return {name for name in names if name in {"node_modules", "dist", "__pycache__", ".venv"}}


def replay(stages: list[Stage], target: str, root: Path, repo: Path, tools: Path) -> _Sandbox:
    """Run the target's build chain in ``root``; returns the sandbox for checks."""
    sandbox = _Sandbox(root, repo, tools)
    for stage in chain(stages, target):
        for item in stage.instructions:
            sandbox.apply(item)
    return sandbox
