"""The OpenAPI document, made to promise exactly what the gateway accepts.

FastAPI documents a task's ``params`` as any object and its ``engine`` as
any name, but submission refuses an engine that is not installed and checks
the params of the built-in engines against their models. So the document
describes ``TaskCreate`` as one variant per engine that can run here: the
built-in ones with their params model, the others (``cmbagent``, validated by
the runner) with any object, each with the modes it runs when it names them.
What can run is the runners' own answer (``--describe-engines``, asked again
now and then), so the document is made anew for each request of it: a
request valid under the document is one the gateway takes, and the reverse.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from cmbtask_protocol import BUILTIN_ENGINE_PARAMS
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter, ValidationError

__all__ = ["install_openapi"]

_REF = "#/components/schemas/{model}"


def _params_schema(engine: str, components: dict[str, Any]) -> dict[str, Any]:
    model = BUILTIN_ENGINE_PARAMS.get(engine)
    if model is None:
        return {"type": "object", "additionalProperties": True, "title": "Params"}
    schema = TypeAdapter(model).json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _takes_empty_params(engine: str) -> bool:
    model = BUILTIN_ENGINE_PARAMS.get(engine)
    if model is None:
        return True
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _variant(
    base: dict[str, Any], engine: str, modes: list[str] | None, components: dict[str, Any], default: str
) -> dict[str, Any]:
    variant = copy.deepcopy(base)
    properties = variant["properties"]
    properties["engine"] = {"type": "string", "enum": [engine], "title": "Engine"}
    properties["params"] = _params_schema(engine, components)
    required = set(variant.get("required", []))
    if modes is not None:
        properties["mode"] = {"type": "string", "enum": modes, "title": "Mode"}
        if base["properties"]["mode"].get("default") not in modes:
            required.add("mode")  # the default mode is not one this engine runs
    if engine != default:
        required.add("engine")  # without it the engine is the default one
    if not _takes_empty_params(engine):
        required.add("params")  # the default, {}, is refused
    if required:
        variant["required"] = sorted(required)
    variant["title"] = f"TaskCreate ({engine})"
    return variant


def task_create_variants(schema: dict[str, Any], runnable: Mapping[str, list[str] | None]) -> None:
    """Replace ``TaskCreate`` in ``schema`` by one variant per engine that can
    run here (engine → its modes, None for any mode)."""
    components = schema["components"]["schemas"]
    base = components["TaskCreate"]
    default = str(base["properties"]["engine"].get("default", ""))
    variants = [_variant(base, name, runnable[name], components, default) for name in sorted(runnable)]
    components["TaskCreate"] = {"title": "TaskCreate", "oneOf": variants}


#: how each auth mode's credentials travel (``none`` has none)
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "token": {"type": "http", "scheme": "bearer", "description": "a token from `cmbtask token create`"},
    "proxy": {"type": "apiKey", "in": "header", "name": "X-Forwarded-User"},
}


def declare_security(schema: dict[str, Any], auth_mode: str, proxy_header: str) -> None:
    """Name the credentials on every operation that can answer 401."""
    scheme = _SECURITY_SCHEMES.get(auth_mode)
    if scheme is None:
        return
    if auth_mode == "proxy":
        scheme = {**scheme, "name": proxy_header}
    schema["components"]["securitySchemes"] = {auth_mode: scheme}
    for operations in schema["paths"].values():
        for operation in operations.values():
            if "401" in operation.get("responses", {}):
                operation["security"] = [{auth_mode: []}]


def install_openapi(
    app: FastAPI, runnable: Callable[[], Mapping[str, list[str] | None]], auth_mode: str, proxy_header: str
) -> None:
    """Build ``app``'s document for each request of it, with ``TaskCreate`` per
    engine that can run now and the auth mode's credentials."""

    def openapi() -> dict[str, Any]:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        task_create_variants(schema, runnable())
        declare_security(schema, auth_mode, proxy_header)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
