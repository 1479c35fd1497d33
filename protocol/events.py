"""The event envelope: what an agent records in its outbox and syncs to the control plane.

Events are facts about the kitchen, numbered per agent by a gap-free ``seq`` starting at 1. The
control plane deduplicates by ``(agent_id, seq)``; ``event_id`` is a UUID for cross-system
references. ``type`` is a plain string so a newer agent's event types still parse; the typed
payload models below are for the types this version understands.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.base import Ident, Timestamp, Token, WireModel
from protocol.errors import MessageError


class EventType(StrEnum):
    """Event types this protocol version defines."""

    TASK_STARTED = "task.started"
    STEP_STARTED = "task.step_started"
    STEP_DONE = "task.step_done"
    TASK_DONE = "task.done"
    TASK_FAILED = "task.failed"
    TASK_RELEASED = "task.released"
    DEVICE_STATUS = "device.status"
    ALERT_RAISED = "alert.raised"
    ALERT_RESOLVED = "alert.resolved"
    READINGS_SUMMARY = "readings.summary"
    HACCP_EVIDENCE = "haccp.evidence"


class EventEnvelope(WireModel):
    """One outbox event. ``occurred_at`` is the agent's wall clock; the control plane corrects it
    with the clock offset it estimates from sync round trips."""

    agent_id: Ident
    kitchen_id: Ident
    seq: int = Field(ge=1)
    event_id: Token
    type: Token
    occurred_at: Timestamp
    device_time: Timestamp | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TaskStarted(_Payload):
    """Recorded durably *before* the first command of a task is sent."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    station_id: Ident
    staff_badge: Token | None = None


class StepStarted(_Payload):
    """A recipe step was commanded (or, for a manual step, announced to staff)."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    step: int = Field(ge=0)
    device_id: Ident | None = None
    command_id: Token | None = None


class StepDone(_Payload):
    """A recipe step finished; carries the device's evidence (e.g. the core temperature)."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    step: int = Field(ge=0)
    device_id: Ident | None = None
    command_id: Token | None = None
    core_temp_c: float | None = None
    staff_badge: Token | None = None
    delay_reason: Token | None = None


class TaskDone(_Payload):
    """Recorded after the last step: the batch is ready."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    quantity: int = Field(ge=0)


class TaskFailed(_Payload):
    """The task cannot finish (device fault, expired start-by, food-safety discard)."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    reason: Token
    started: bool


class TaskReleased(_Payload):
    """The agent gives a never-started task back so the control plane may re-plan it."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    reason: Token


class DeviceStatus(_Payload):
    """A device came online or went offline (birth / Last Will), or the health of an online
    device changed: ``degraded`` (still usable: an unrestored alarm such as a unit not
    reaching its set point, or intermittent telemetry) or ``failed`` (its state says fault),
    with the ``reason``. Without ``health``, an online device is ``ok``."""

    device_id: Ident
    kind: str | None = None
    status: Literal["online", "offline"]
    health: Literal["ok", "degraded", "failed"] | None = None
    reason: Token | None = None


class AlertRaised(_Payload):
    """A local alert (food safety, equipment) raised on the agent, online or not."""

    alert_id: Token
    kind: Token
    severity: Literal["info", "warning", "critical"]
    device_id: Ident | None = None
    message: str = Field(max_length=512)
    value: float | None = None
    limit: float | None = None


class AlertResolved(_Payload):
    """An alert's condition ended (``condition_cleared``) or staff recorded what they did about
    it (``corrective_action``: reheated, discarded, moved...), with their badge."""

    alert_id: Token
    reason: Literal["condition_cleared", "corrective_action"]
    corrective_action: Token | None = None
    acted_by: Token | None = None


class ReadingsSummary(_Payload):
    """Routine telemetry of one device and metric over a window, summarised on the agent.

    Sent in the routine lane: numbered only when a sync batch has room after every task event
    and alert (see docs/protocol.md, "Two lanes, one seq"), and the one kind of event a disk
    budget may drop before it is numbered. ``missed`` counts messages the device numbered but
    the agent never received (gaps in the device ``seq``).
    """

    device_id: Ident
    metric: Token
    unit: str = Field(default="", max_length=16)
    window_start: Timestamp
    window_end: Timestamp
    count: int = Field(ge=1)
    min: float
    max: float
    mean: float
    last: float
    missed: int = Field(default=0, ge=0)


#: Most readings one ``haccp.evidence`` event carries; the agent splits bigger batches.
MAX_EVIDENCE_PER_EVENT = 256


class HaccpReading(_Payload):
    """One HACCP evidence record: the actual value, when it was measured, which device and
    probe, why it was kept, the limit it was checked against and the alert it belongs to.

    ``reason`` is ``interval`` (the routine sample kept every ``evidence_interval_s``),
    ``excursion`` (every reading beyond the legal limit, and the first one back), or a
    compliance event about the measurement itself: ``probe_silent`` or ``device_offline`` (the
    probe stopped reporting; value and time are its last reading) or ``probe_check`` (an
    accuracy check against a reference, e.g. iced water at 0 °C: the probe's value, with the
    reference in ``limit_c``; kept whether it passed or failed ±1 °C) or ``probe_disagreement``
    (a unit's sensor and a reference probe placed in it more than ±1 °C apart: each probe's
    reading). A newer agent's reasons are kept as sent.
    """

    device_id: Ident
    probe: Token
    value_c: float
    measured_at: Timestamp
    reason: Token
    limit_c: float | None = None
    alert_id: Token | None = None
    #: Staff badge of whoever took the reading by hand (e.g. a probe check).
    actor: Token | None = None


class HaccpEvidence(_Payload):
    """HACCP evidence the agent kept, sent in the priority lane: numbered and committed
    (``synchronous=FULL``) with the readings themselves, never dropped by a disk budget.
    Who acted on an excursion comes later, in the ``alert.resolved`` (``corrective_action``)
    of its ``alert_id``."""

    readings: list[HaccpReading] = Field(min_length=1, max_length=MAX_EVIDENCE_PER_EVENT)


PAYLOAD_MODELS: dict[str, type[_Payload]] = {
    EventType.TASK_STARTED: TaskStarted,
    EventType.STEP_STARTED: StepStarted,
    EventType.STEP_DONE: StepDone,
    EventType.TASK_DONE: TaskDone,
    EventType.TASK_FAILED: TaskFailed,
    EventType.TASK_RELEASED: TaskReleased,
    EventType.DEVICE_STATUS: DeviceStatus,
    EventType.ALERT_RAISED: AlertRaised,
    EventType.ALERT_RESOLVED: AlertResolved,
    EventType.READINGS_SUMMARY: ReadingsSummary,
    EventType.HACCP_EVIDENCE: HaccpEvidence,
}


def parse_event_payload(event: EventEnvelope) -> _Payload:
    """Validate ``event.payload`` against the model of ``event.type``.

    Raises :class:`MessageError` with ``reason`` ``unknown_event_type`` or ``invalid_message``.
    """
    model = PAYLOAD_MODELS.get(event.type)
    if model is None:
        raise MessageError(f"unknown event type {event.type!r}", reason="unknown_event_type")
    try:
        return model.model_validate(event.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise MessageError(
            f"invalid {event.type} payload: {where}: {first['msg']}", reason="invalid_message"
        ) from exc


__all__ = [
    "MAX_EVIDENCE_PER_EVENT",
    "PAYLOAD_MODELS",
    "AlertRaised",
    "AlertResolved",
    "DeviceStatus",
    "EventEnvelope",
    "EventType",
    "HaccpEvidence",
    "HaccpReading",
    "ReadingsSummary",
    "StepDone",
    "StepStarted",
    "TaskDone",
    "TaskFailed",
    "TaskReleased",
    "TaskStarted",
    "parse_event_payload",
]
