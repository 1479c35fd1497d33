"""Response models of the operators' API: what ``/docs`` promises and what the routes return.

Times are ISO-8601 UTC strings with microseconds (``2026-01-01T12:00:00.000000+00:00``), made by
:func:`control_plane.audit.iso`. Extra fields are refused in tests (``extra="forbid"``) so a view
and its model cannot drift apart silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

IsoTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(_View):
    status: Literal["ok"]


class StationOut(_View):
    id: str
    name: str
    slots: int


class StationList(_View):
    stations: list[StationOut]


class EquipmentOut(_View):
    id: str
    kind: str
    station_id: str | None
    health: Literal["ok", "degraded", "failed", "offline"]


class EquipmentList(_View):
    equipment: list[EquipmentOut]


class KitchenOut(_View):
    id: str
    name: str
    timezone: str
    location: str | None
    status: Literal["active", "paused", "offline"]
    #: Whether any of its agents synced within ``agent_unreachable_after_s``.
    reachable: bool
    last_agent_sync_at: IsoTime | None
    stations: list[StationOut]
    equipment: list[EquipmentOut]


class KitchenList(_View):
    kitchens: list[KitchenOut]


class RecipeStepOut(_View):
    name: str
    equipment_kind: str | None
    action: str
    setpoint_c: float | None
    duration_s: float
    manual: bool
    min_core_temp_c: float | None


class IngredientUseOut(_View):
    ingredient: str
    per_unit: float


class SkuOut(_View):
    id: str
    name: str
    station_id: str
    steps: list[RecipeStepOut]
    freshness_window_min: float
    priority: Literal["low", "normal", "high"]
    hold: Literal["hot", "cold", "ambient"]
    ingredients: list[IngredientUseOut]
    max_batch_units: int


class SkuList(_View):
    skus: list[SkuOut]


TaskState = Literal["planned", "leased", "started", "done", "failed", "cancelled"]
OrderStatus = Literal[
    "accepted", "planned", "in_prep", "ready", "handed_over", "rejected", "cancelled", "failed"
]


class TaskOut(_View):
    id: str
    sku_id: str
    quantity: int
    state: TaskState
    kitchen_id: str
    station_id: str
    start_after: IsoTime
    finish_by: IsoTime
    predicted_ready_at: IsoTime
    fencing_token: int
    lease_agent_id: str | None
    start_by: IsoTime | None
    started_at: IsoTime | None
    finished_at: IsoTime | None
    cancel_reason: str | None
    wasted_quantity: int | None
    reassigned_at: IsoTime | None
    #: Leased or started at a kitchen whose agent is unreachable: it stays there until an
    #: operator reassigns it (``POST /v1/tasks/{id}/reassign``).
    stranded: bool


class TaskPage(_View):
    tasks: list[TaskOut]
    next_cursor: str | None


class OrderItemOut(_View):
    sku_id: str
    quantity: int


class PredictionOut(_View):
    """The SLA engine's latest prediction for an open order (times null when unbounded, e.g.
    stranded on an unreachable kitchen)."""

    ready_p50: IsoTime | None
    ready_p90: IsoTime | None
    handover_at: IsoTime | None
    #: Promise margin (p90) or freshness margin, whichever is smaller; negative: a miss.
    margin_s: float | None
    miss_probability: float
    at_risk: bool
    cause: str


class OrderOut(_View):
    id: str
    status: OrderStatus
    reason: str | None
    kitchen_id: str | None
    predicted_ready_at: IsoTime | None
    promised_by: IsoTime
    destination: str
    transport_min: float
    priority: Literal["low", "normal", "high"]
    created_at: IsoTime
    ready_at: IsoTime | None
    items: list[OrderItemOut]
    tasks: list[TaskOut]
    #: Null until the control loop has evaluated the order, and once it is closed.
    prediction: PredictionOut | None = None


class StockItemOut(_View):
    ingredient: str
    quantity: float
    low_water_mark: float
    #: Below the low-water mark now.
    low: bool
    #: When the current low-stock alert was raised (null: none raised since the last restock).
    low_alerted_at: IsoTime | None
    updated_at: IsoTime


class KitchenStockOut(_View):
    kitchen_id: str
    items: list[StockItemOut]


class OrderPage(_View):
    orders: list[OrderOut]
    next_cursor: str | None


class ReconnectSummary(_View):
    started_at: IsoTime
    offline_s: float
    finished_at: IsoTime | None
    syncs: int
    events_applied: int
    duplicates_ignored: int
    conflicts: int
    resend_requests: int


class UnrecoverableGap(_View):
    """Events the agent can no longer send (``events_unrecoverable``), until an admin accepts
    the gap with ``POST /v1/agents/{id}/accept-gap``."""

    from_seq: int
    to_seq: int
    detected_at: IsoTime


class AgentOut(_View):
    id: str
    kitchen_id: str
    name: str
    agent_version: str
    enrolled_at: IsoTime
    last_seen_at: IsoTime | None
    reachable: bool
    revoked: bool
    revoked_at: IsoTime | None
    last_acked_seq: int
    outbox_depth: int
    #: Seconds to add to the agent's wall clock to land on the server's timeline.
    clock_offset_s: float
    clock_samples: int
    reconnect: ReconnectSummary | None
    events_unrecoverable: UnrecoverableGap | None = None


class AgentList(_View):
    agents: list[AgentOut]


class AlertOut(_View):
    """An alert. ``agent_id`` is ``control-plane`` for the control plane's own (``sla_at_risk``:
    ``value`` the lead time in seconds, ``limit`` the predicted margin; ``low_stock``).
    Acknowledged is what a person did; resolved is the condition clearing."""

    agent_id: str
    alert_id: str
    kitchen_id: str
    kind: str
    severity: Literal["info", "warning", "critical"]
    device_id: str | None
    message: str
    value: float | None
    limit: float | None
    #: The order an ``sla_at_risk`` alert is about.
    order_id: str | None
    #: Why an ``sla_at_risk`` alert was raised: ``queue``, ``slow_kitchen``,
    #: ``equipment_down`` or ``stranded``.
    cause: str | None
    raised_at: IsoTime
    acknowledged_at: IsoTime | None
    acknowledged_by: str | None
    corrective_action: str | None
    #: When the condition cleared (null: still open).
    resolved_at: IsoTime | None
    #: How it cleared (e.g. the order recovered or closed).
    resolution: str | None


class AlertPage(_View):
    alerts: list[AlertOut]
    next_cursor: str | None


class EnrollmentTokenOut(_View):
    token: str = Field(description="shown once; give it to `brigade-agent enroll --token`")
    id: str
    kitchen_id: str
    expires_at: IsoTime


class EnrollmentTokenInfo(_View):
    id: str = Field(description="the first 16 hex digits of the token's hash")
    kitchen_id: str
    created_at: IsoTime
    expires_at: IsoTime
    state: Literal["unused", "used", "expired"]
    used_at: IsoTime | None
    used_by_agent_id: str | None


class EnrollmentTokenList(_View):
    enrollment_tokens: list[EnrollmentTokenInfo]


class ApiTokenOut(_View):
    token: str = Field(description="shown once")
    name: str
    role: Literal["viewer", "operator", "admin"]


class AuditSubject(_View):
    type: str
    id: str


class AuditRecordOut(_View):
    seq: int
    at: IsoTime
    actor_type: str
    actor_id: str
    action: str
    subject: AuditSubject
    order_id: str | None
    kitchen_id: str | None
    station_id: str | None
    device_id: str | None
    reason: str | None
    details: dict[str, Any]
    hash: str
    prev_hash: str


class AuditPage(_View):
    records: list[AuditRecordOut]
    #: Pass as ``after_seq`` for the next page (None at the end).
    next_after_seq: int | None


class OrderWho(_View):
    agents: list[str]
    devices: list[str]
    staff: list[str]


class OrderWhere(_View):
    kitchens: list[str]
    stations: list[str]
    equipment: list[str]


class OrderWhen(_View):
    accepted_at: IsoTime | None
    planned_at: IsoTime | None
    leased_at: IsoTime | None
    started_at: IsoTime | None
    ready_at: IsoTime | None


class Delay(_View):
    what: str
    reason: str
    seconds: float


class OrderAudit(_View):
    order_id: str
    status: OrderStatus
    who: OrderWho
    where: OrderWhere
    when: OrderWhen
    delays: list[Delay]
    records: list[AuditRecordOut]


class BrokenLinkOut(_View):
    seq: int
    problem: str


class AuditVerification(_View):
    ok: bool
    records: int
    broken: BrokenLinkOut | None


class Stats(_View):
    orders_by_status: dict[str, int]
    kitchens: dict[str, dict[str, int]]
    tasks_by_state: dict[str, int]


class ValidationIssue(BaseModel):
    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """An ``application/problem+json`` answer (RFC 9457); ``type`` is stable per error."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["https://brigade.example/problems/not-found"])
    title: str
    status: int
    detail: str
    reason: str | None = Field(default=None, description="machine-readable cause, when any")
    order_id: str | None = Field(default=None, description="the recorded rejected order")
    errors: list[ValidationIssue] | None = Field(default=None, description="validation errors")
