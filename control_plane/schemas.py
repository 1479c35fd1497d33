"""Request models of the operators' API (``/v1/...``). Unknown fields are refused (typos are
errors, not silently ignored); the agents' API uses :mod:`protocol.sync_api` instead."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from protocol.messages import DeviceKind

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Token = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")]
Priority = Literal["low", "normal", "high"]
Role = Literal["viewer", "operator", "admin"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationIn(_Request):
    id: Ident
    name: str = Field(min_length=1, max_length=128)
    slots: int = Field(default=1, ge=1, le=64)


class KitchenCreate(_Request):
    id: Ident
    name: str = Field(min_length=1, max_length=128)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    location: str | None = Field(default=None, max_length=256)
    status: Literal["active", "paused", "offline"] = "active"
    stations: list[StationIn] = Field(min_length=1, max_length=64)


class StationUpdate(_Request):
    name: str | None = Field(default=None, min_length=1, max_length=128)
    slots: int | None = Field(default=None, ge=1, le=64)


class KitchenStatusUpdate(_Request):
    status: Literal["active", "paused", "offline"]


class EquipmentCreate(_Request):
    id: Ident
    kind: DeviceKind
    station_id: Ident | None = None


class EquipmentUpdate(_Request):
    #: The station it now stands at; ``null`` detaches it.
    station_id: Ident | None


class StepIn(_Request):
    name: str = Field(min_length=1, max_length=64)
    equipment_kind: DeviceKind | None = None
    action: str = Field(default="cook", min_length=1, max_length=64)
    setpoint_c: float | None = Field(default=None, ge=-60, le=400)
    duration_s: float = Field(ge=0, le=24 * 3600)
    manual: bool = False
    min_core_temp_c: float | None = Field(default=None, ge=-60, le=400)


class IngredientUse(_Request):
    """How much of an ingredient one unit of a SKU uses (in the unit the kitchen stocks it)."""

    ingredient: Ident
    per_unit: float = Field(gt=0, le=1_000_000)


class SkuCreate(_Request):
    id: Ident
    name: str = Field(min_length=1, max_length=128)
    station_id: Ident
    steps: list[StepIn] = Field(min_length=1, max_length=32)
    freshness_window_min: float = Field(gt=0, le=7 * 24 * 60)
    priority: Priority = "normal"
    hold: Literal["hot", "cold", "ambient"] = "hot"
    #: What one unit uses; stock is reserved for it at kitchens that track the ingredient.
    ingredients: list[IngredientUse] = Field(default_factory=list, max_length=64)
    #: Units one task may cook for several orders at once (0: no batching).
    max_batch_units: int = Field(default=0, ge=0, le=1000)


class SkuUpdate(_Request):
    """Everything of a SKU but its id and station (a new station is a new SKU)."""

    name: str = Field(min_length=1, max_length=128)
    steps: list[StepIn] = Field(min_length=1, max_length=32)
    freshness_window_min: float = Field(gt=0, le=7 * 24 * 60)
    priority: Priority = "normal"
    hold: Literal["hot", "cold", "ambient"] = "hot"
    ingredients: list[IngredientUse] = Field(default_factory=list, max_length=64)
    max_batch_units: int = Field(default=0, ge=0, le=1000)


class StockLineIn(_Request):
    ingredient: Ident
    quantity: float = Field(gt=0, le=1_000_000_000)
    #: Below this the kitchen gets a ``low_stock`` alert; omitted keeps the current mark (0
    #: for an ingredient new to the kitchen).
    low_water_mark: float | None = Field(default=None, ge=0, le=1_000_000_000)


class StockDelivery(_Request):
    lines: list[StockLineIn] = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=256)


class OrderItemIn(_Request):
    sku_id: Ident
    quantity: int = Field(ge=1, le=1000)


class OrderCreate(_Request):
    items: list[OrderItemIn] = Field(min_length=1, max_length=100)
    promised_by: AwareDatetime
    destination: str = Field(min_length=1, max_length=128)
    transport_min: float = Field(default=0, ge=0, le=24 * 60)
    priority: Priority = "normal"

    @property
    def promised_by_ts(self) -> float:
        return datetime.timestamp(self.promised_by)


class EnrollmentTokenCreate(_Request):
    kitchen_id: Ident
    #: Seconds until the token expires; the server's ``enrollment_ttl_s`` (1 h) when omitted.
    ttl_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class ApiTokenCreate(_Request):
    role: Role
    name: str = Field(default="api", min_length=1, max_length=64)


class OrderCancel(_Request):
    reason: Token = "cancelled_by_operator"


class TaskReassign(_Request):
    #: Where the task goes; its current kitchen when omitted (back to that kitchen's queue).
    kitchen_id: Ident | None = None
    reason: str = Field(min_length=1, max_length=256)


class GapAccept(_Request):
    #: Why the missing events may be given up (e.g. "control plane restored from backup").
    reason: str = Field(min_length=1, max_length=256)


class AlertAcknowledge(_Request):
    corrective_action: str = Field(min_length=1, max_length=512)
