"""Numbers and booleans as JSON Schema defines them, for request bodies.

pydantic's lax mode takes ``"5"`` for 5 and ``0`` for false; its strict mode
refuses ``5.0`` for an integer, which JSON Schema counts as one. A client
that follows the published schema must be neither surprised nor refused, so
request fields use these types.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, StrictBool, model_validator

__all__ = ["JSON_NUMBER", "NO_NUL", "JsonBool", "JsonFloat", "StorableText"]


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


#: ``pattern`` of a string stored in a text column: PostgreSQL keeps no U+0000
#: there (its ``json`` columns do, so free-form objects may hold it)
NO_NUL = r"^[^\x00]*$"


def _refuse_unstorable(value: Any) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    raise ValueError("text must be Unicode without lone surrogates") from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


class StorableText(BaseModel):
    """A body whose every string and key, however deep, is Unicode a database
    can store: no lone surrogate (``"\\ud800"`` is valid JSON but no UTF-8).
    Refused with 422 at the door instead of a 500 from the database."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        _refuse_unstorable(data)
        return data
