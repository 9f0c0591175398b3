"""Generate a value that validates against a JSON schema.

The fake OpenAI server must answer every ``response_format`` request with JSON
that matches the caller's schema, as the real API does in strict mode, even
for agents the test script knows nothing about. This walks the schema (refs,
combinators, objects, arrays, scalars with their bounds) and builds the
smallest plausible instance.
"""

from __future__ import annotations

from typing import Any

__all__ = ["example_for"]

_MAX_DEPTH = 12


def example_for(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid for ``schema``; ``root`` resolves ``#/$defs/...`` refs."""
    root = schema if root is None else root
    if depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return example_for(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _first_option(schema[key], root, depth)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part["$ref"], root) if "$ref" in part else part)
        return example_for(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _SCALARS.get(kind, _object_or_array)(schema, root, depth)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _first_option(options: list[dict[str, Any]], root: dict[str, Any], depth: int) -> Any:
    # Prefer a concrete value over null: callers usually want content.
    concrete = [o for o in options if o.get("type") != "null"]
    return example_for((concrete or options)[0], root, depth + 1)


def _string(schema: dict[str, Any], root: dict[str, Any], depth: int) -> str:
    text = "example"
    if schema.get("format") == "date-time":
        text = "2026-01-01T00:00:00Z"
    elif schema.get("format") == "date":
        text = "2026-01-01"
    min_len = int(schema.get("minLength", 0))
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


def _number(schema: dict[str, Any], root: dict[str, Any], depth: int) -> float | int:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    value: float = 1.0 if low is None else float(low) + (1.0 if "exclusiveMinimum" in schema else 0.0)
    high = schema.get("maximum")
    if high is not None and value > float(high):
        value = float(high)
    return int(value) if schema.get("type") == "integer" else value


def _boolean(schema: dict[str, Any], root: dict[str, Any], depth: int) -> bool:
    return True


def _null(schema: dict[str, Any], root: dict[str, Any], depth: int) -> None:
    return None


def _object_or_array(schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if schema.get("type") == "array" or "items" in schema:
        item_schema = schema.get("items") or {}
        count = max(1, int(schema.get("minItems", 1)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [example_for(item_schema, root, depth + 1) for _ in range(count)]
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", properties))
    return {name: example_for(sub, root, depth + 1) for name, sub in properties.items() if name in required}


_SCALARS = {
    "string": _string,
    "integer": _number,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
}
