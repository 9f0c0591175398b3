"""Every event type has a payload model, and the schema the UI is generated
from maps each type to it."""

from __future__ import annotations

from cmbtask_protocol import EVENT_PAYLOADS, EventType, validate_payload
from cmbtask_protocol.schema import json_schema


def test_every_event_type_has_its_payload_and_no_payload_lacks_a_type() -> None:
    assert set(EventType) == set(EVENT_PAYLOADS)


def test_the_schema_names_each_type_with_its_payload_model() -> None:
    schema = json_schema()
    payloads = schema["event_payloads"]
    assert payloads == {str(t): model.__name__ for t, model in EVENT_PAYLOADS.items()}
    assert all(name in schema["$defs"] for name in payloads.values())


def test_event_type_is_the_wire_string() -> None:
    assert EventType.TASK_QUEUED == "task.queued" and f"{EventType.OUTPUT}" == "output"
    assert validate_payload(EventType.TASK_QUEUED, {"engine": "demo", "mode": "m"}) == {
        "engine": "demo",
        "mode": "m",
        "prompt": "",
    }
