"""Kitchen-local MQTT messages between devices and the edge agent.

One model per channel of :mod:`protocol.topics`. Devices publish ``birth``, ``status``, ``state``
(all retained), ``telemetry``, ``event`` and ``ack``; the agent publishes ``cmd``.

A device treats a repeated ``command_id`` as a no-op that re-sends its last ack, so the agent
can always retry a command safely. Command ids are derived, never random:

>>> command_id_for("task-42", 0, 1)
'task-42.s0.a1'
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from protocol.base import (
    Ident,
    Scalar,
    Timestamp,
    Token,
    WireModel,
    decode_message,
    encode_message,
)


class DeviceKind(StrEnum):
    """Equipment kinds a kitchen can have."""

    OVEN = "oven"
    FRYER = "fryer"
    GRILL = "grill"
    FRIDGE = "fridge"
    FREEZER = "freezer"
    HOT_HOLD = "hot_hold"
    BLAST_CHILLER = "blast_chiller"
    PROBE = "probe"


class DeviceMode(StrEnum):
    """What a device is doing, as reported in its retained ``state``."""

    OFF = "off"
    IDLE = "idle"
    PREHEATING = "preheating"
    COOKING = "cooking"
    HOLDING = "holding"
    COOLING = "cooling"
    FAULT = "fault"


class AckResult(StrEnum):
    """A device's answer to a command: accepted, then done; or rejected/expired."""

    ACCEPTED = "accepted"
    DONE = "done"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Birth(WireModel):
    """Retained on ``birth`` when a device connects: what it is and can do."""

    device_id: Ident
    kind: DeviceKind
    model: str = Field(max_length=64)
    firmware: str = Field(max_length=32)
    capabilities: list[Token] = Field(default_factory=list, max_length=32)
    ts: Timestamp


class Status(WireModel):
    """Retained on ``status``: ``online`` on connect, ``offline`` as the device's Last Will."""

    state: Literal["online", "offline"]
    ts: Timestamp | None = None


class State(WireModel):
    """Retained on ``state``: the device's current mode and, when serving a task, which step."""

    device_id: Ident
    seq: int = Field(ge=0)
    ts: Timestamp
    mode: DeviceMode
    temp_c: float | None = Field(default=None, ge=-100, le=600)
    setpoint_c: float | None = Field(default=None, ge=-100, le=600)
    door_open: bool = False
    command_id: Token | None = None
    task_id: Token | None = None
    step: int | None = Field(default=None, ge=0)
    remaining_s: float | None = Field(default=None, ge=0)


class Reading(WireModel):
    """One measured value."""

    metric: Token
    value: float
    unit: str = Field(max_length=16)


class Telemetry(WireModel):
    """Periodic readings; ``seq`` lets the agent detect what the broker dropped."""

    device_id: Ident
    seq: int = Field(ge=0)
    ts: Timestamp
    readings: list[Reading] = Field(min_length=1, max_length=64)


class DeviceEvent(WireModel):
    """Something that happened on the device: a fault, an alarm, a door opening.

    Staff confirm a manual recipe step from a kitchen display or badge reader with
    ``event="step_confirmed"`` and ``data={"task_id": ..., "step": ..., "badge": ...}``.
    """

    device_id: Ident
    seq: int = Field(ge=0)
    ts: Timestamp
    event: Token
    severity: Literal["info", "warning", "critical"] = "info"
    detail: str = Field(default="", max_length=512)
    data: dict[str, Scalar] = Field(default_factory=dict, max_length=32)


class Command(WireModel):
    """Agent to device. ``expires_at`` bounds how late a device may act on it."""

    command_id: Token
    action: Token
    params: dict[str, Scalar] = Field(default_factory=dict, max_length=32)
    issued_at: Timestamp
    expires_at: Timestamp
    task_id: Token | None = None
    step: int | None = Field(default=None, ge=0)


class Ack(WireModel):
    """Device to agent, echoing ``command_id``; repeated for a repeated command."""

    command_id: Token
    device_id: Ident
    result: AckResult
    ts: Timestamp
    reason: str | None = Field(default=None, max_length=256)
    data: dict[str, Scalar] = Field(default_factory=dict, max_length=32)


def command_id_for(task_id: str, step: int, attempt: int) -> str:
    """The deterministic id of attempt ``attempt`` of step ``step`` of ``task_id``."""
    return f"{task_id}.s{step}.a{attempt}"


__all__ = [
    "Ack",
    "AckResult",
    "Birth",
    "Command",
    "DeviceEvent",
    "DeviceKind",
    "DeviceMode",
    "Reading",
    "State",
    "Status",
    "Telemetry",
    "command_id_for",
    "decode_message",
    "encode_message",
]
