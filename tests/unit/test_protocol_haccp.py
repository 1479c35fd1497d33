"""The ``haccp.evidence`` payload and the health fields of ``device.status``."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import MessageError
from protocol.events import (
    MAX_EVIDENCE_PER_EVENT,
    DeviceStatus,
    EventEnvelope,
    EventType,
    HaccpEvidence,
    parse_event_payload,
)


def envelope(type_: str, payload: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(
        agent_id="a-1",
        kitchen_id="k1",
        seq=1,
        event_id="e-1",
        type=type_,
        occurred_at=1_767_225_600.0,
        payload=payload,
    )


def reading(**extra: Any) -> dict[str, Any]:
    return {
        "device_id": "fridge-1",
        "probe": "air_temp",
        "value_c": 9.5,
        "measured_at": 1_767_225_500.0,
        "reason": "excursion",
        "limit_c": 5.0,
        "alert_id": "cold_holding_breach:fridge-1:air_temp:1767223800",
    } | extra


def test_evidence_carries_value_time_device_probe_limit_and_alert() -> None:
    """What an inspector needs is in the typed payload."""
    parsed = parse_event_payload(envelope(EventType.HACCP_EVIDENCE, {"readings": [reading()]}))
    assert isinstance(parsed, HaccpEvidence)
    [kept] = parsed.readings
    assert (kept.device_id, kept.probe, kept.value_c, kept.limit_c) == (
        "fridge-1",
        "air_temp",
        9.5,
        5.0,
    )


def test_a_newer_agents_evidence_reason_is_kept_as_sent() -> None:
    """``reason`` is open: a compliance event this version does not know still parses."""
    payload = {"readings": [reading(reason="probe_drift", actor="badge-1")]}
    parsed = parse_event_payload(envelope(EventType.HACCP_EVIDENCE, payload))
    assert isinstance(parsed, HaccpEvidence)
    assert (parsed.readings[0].reason, parsed.readings[0].actor) == ("probe_drift", "badge-1")


@pytest.mark.parametrize(
    "payload",
    [
        {"readings": []},
        {"readings": [reading()] * (MAX_EVIDENCE_PER_EVENT + 1)},
        {"readings": [reading(value_c="cold")]},
        {"readings": [reading(device_id="fridge 1")]},
        {"readings": [reading(measured_at=-1)]},
    ],
)
def test_malformed_evidence_is_an_invalid_message(payload: dict[str, Any]) -> None:
    """Empty or oversized batches, non-numeric values, bad ids or times are refused."""
    with pytest.raises(MessageError) as caught:
        parse_event_payload(envelope(EventType.HACCP_EVIDENCE, payload))
    assert caught.value.reason == "invalid_message"


def test_device_status_carries_degraded_health_and_its_reason() -> None:
    """An online device's health change travels in ``device.status``; unknown health fails."""
    payload = {"device_id": "oven-1", "status": "online", "health": "degraded", "reason": "x"}
    parsed = parse_event_payload(envelope(EventType.DEVICE_STATUS, payload))
    assert isinstance(parsed, DeviceStatus) and parsed.health == "degraded"
    with pytest.raises(MessageError):
        parse_event_payload(envelope(EventType.DEVICE_STATUS, payload | {"health": "meh"}))
