"""The OpenAPI document, made to promise exactly what the gateway accepts.

FastAPI documents a task's ``params`` as any object and its ``engine`` as
any name, but submission refuses an engine that is not installed and checks
the params of the built-in engines against their models. So the document
describes ``TaskCreate`` as one variant per installed engine: the built-in
ones with their params model, the others (``cmbagent``, validated by the
runner) with any object. A request valid under the document is then one the
gateway takes, and the reverse.

One state of a deployment still answers a valid request with 422
``engine_unavailable``: a runner that describes an engine as unusable here
(the ``cmbagent`` library missing, no API key). That is the deployment's
state, not the request's shape, and ``/api/modes`` tells it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
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
    base: dict[str, Any], engines: list[str], params: dict[str, Any], default: bool
) -> dict[str, Any]:
    variant = copy.deepcopy(base)
    variant["properties"]["engine"] = {"type": "string", "enum": engines, "title": "Engine"}
    variant["properties"]["params"] = params
    required = set(variant.get("required", []))
    if not default:
        required.add("engine")  # without it the engine is the default one
    if not _takes_empty_params(engines[0]):
        required.add("params")  # the default, {}, is refused
    if required:
        variant["required"] = sorted(required)
    variant["title"] = f"TaskCreate ({', '.join(engines)})"
    return variant


def task_create_variants(schema: dict[str, Any], installed: Sequence[str]) -> None:
    """Replace ``TaskCreate`` in ``schema`` by one variant per installed engine."""
    components = schema["components"]["schemas"]
    base = components["TaskCreate"]
    default = str(base["properties"]["engine"].get("default", ""))
    builtin = [name for name in installed if name in BUILTIN_ENGINE_PARAMS]
    others = [name for name in installed if name not in BUILTIN_ENGINE_PARAMS]
    variants = [_variant(base, [name], _params_schema(name, components), name == default) for name in builtin]
    if others:
        variants.append(_variant(base, others, _params_schema(others[0], components), default in others))
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
    app: FastAPI, installed: Callable[[], Sequence[str]], auth_mode: str, proxy_header: str
) -> None:
    """Build ``app``'s document once, with ``TaskCreate`` per engine and the
    auth mode's credentials."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            task_create_variants(schema, installed())
            declare_security(schema, auth_mode, proxy_header)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
