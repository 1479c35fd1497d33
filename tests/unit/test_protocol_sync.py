"""The agent <-> control-plane models, the event envelope and the published JSON Schemas."""

from __future__ import annotations

import json

import pytest

from protocol import EventEnvelope, MessageError, decode_message, parse_event_payload
from protocol import sync_api as sync
from protocol.errors import ProtocolError
from protocol.events import PAYLOAD_MODELS, TaskStarted
from protocol.schema_export import SCHEMA_DIR, generate
from protocol.vector_files import Vector, load

VECTORS = load("sync")


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_sync_vector_outcome(vector: Vector) -> None:
    """Each sync vector decodes or is refused with its reason."""
    model = getattr(sync, vector.meta["model"])
    if vector.valid:
        assert isinstance(decode_message(model, vector.raw), model)
    else:
        with pytest.raises(ProtocolError) as caught:
            decode_message(model, vector.raw)
        assert caught.value.reason == vector.reason


def test_event_payload_is_typed_by_event_type() -> None:
    """A known event type's payload validates into its model."""
    event = EventEnvelope(
        agent_id="a-1",
        kitchen_id="k1",
        seq=1,
        event_id="e-1",
        type="task.started",
        occurred_at=1.0,
        payload={"task_id": "t-1", "fencing_token": 2, "station_id": "hot"},
    )
    assert parse_event_payload(event) == TaskStarted(
        task_id="t-1", fencing_token=2, station_id="hot"
    )


def test_unknown_event_type_parses_as_envelope_but_not_as_payload() -> None:
    """A newer agent's event type still travels; the reader says it does not understand it."""
    event = EventEnvelope(
        agent_id="a-1", kitchen_id="k1", seq=2, event_id="e-2", type="oven.selfclean", occurred_at=1
    )
    with pytest.raises(MessageError) as caught:
        parse_event_payload(event)
    assert caught.value.reason == "unknown_event_type"


def test_every_event_type_has_a_payload_model() -> None:
    """The EventType enum and the payload table agree."""
    from protocol.events import EventType

    assert set(PAYLOAD_MODELS) == {t.value for t in EventType}


def test_checked_in_schemas_match_the_models() -> None:
    """protocol/schemas/ is exactly what the models generate (run `make schemas` to refresh)."""
    expected = generate()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert set(on_disk) == set(expected), "schema files added or removed: run `make schemas`"
    drifted = [name for name, text in expected.items() if on_disk[name] != text]
    assert not drifted, f"schemas drifted from the models: {drifted}; run `make schemas`"


def test_schemas_are_valid_json_with_ids() -> None:
    """Each published schema is JSON with a stable $id."""
    for path in SCHEMA_DIR.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["$id"].endswith(path.name)
