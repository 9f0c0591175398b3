"""Numbers and booleans as JSON Schema defines them, for request bodies.

pydantic's lax mode takes ``"5"`` for 5 and ``0`` for false; its strict mode
refuses ``5.0`` for an integer, which JSON Schema counts as one. A client
that follows the published schema must be neither surprised nor refused, so
request fields use these types.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictBool

__all__ = ["JSON_NUMBER", "JsonBool", "JsonFloat"]


def _number_only(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a JSON number")
    return value


#: for integers, after their constraints (``Annotated[int, Field(ge=1), JSON_NUMBER]``;
#: before them, the constraints vanish from the JSON Schema): ``5.0`` counts,
#: ``5.5``, ``"5"`` and ``true`` do not
JSON_NUMBER = BeforeValidator(_number_only)
#: any JSON number; ``"1.5"`` and ``true`` are not
JsonFloat = Annotated[float, Field(strict=True)]
#: ``true`` or ``false`` only
JsonBool = StrictBool
