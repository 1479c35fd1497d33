"""What one control-loop tick reads from the store, as plain data, in one read transaction.

The tick computes outside any lock on these values (the pure cores in
:mod:`control_plane.planning`) and writes back only what changed. Nothing here decides anything.

A kitchen's ``last_sync_at`` is the newest sync of its unrevoked agents (``None``: no agent has
ever synced, so it is not known to be lost); its ``outbox_depth`` is what those agents last said
they still hold. Its *ingestion lag* is, while an agent reports a backlog, the age of the newest
event applied from it: the oldest event still queued is at least that old. SKUs and equipment
are read as intake's planner reads them (a SKU needs the equipment kinds of its non-manual
steps and uses its ingredients; probes give no capacity); a kitchen's ``stock`` is what it has
left after reservations (``None``: it tracks none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from control_plane.planning.backpressure import Override
from control_plane.planning.world import EquipmentUnit, KitchenSpec, SkuSpec, StationSpec
from control_plane.queries import Reader


@dataclass(frozen=True)
class OpenTask:
    """A task that still occupies a slot (``planned``, ``leased`` or ``started``)."""

    task_id: str
    kitchen_id: str
    station_id: str
    sku_id: str
    quantity: int
    state: str
    start_after: float
    finish_by: float
    planned_finish: float | None
    duration_s: float
    fencing_token: int
    lease_agent_id: str | None
    start_by: float | None
    started_at: float | None
    order_ids: tuple[str, ...]
    flag_reason: str | None


@dataclass(frozen=True)
class OpenOrder:
    """An order accepted and not yet ready."""

    order_id: str
    kitchen_id: str | None
    promised_by: float
    transport_min: float


@dataclass(frozen=True)
class Completion:
    """A finished task (``task.done`` audit record ``audit_seq``) and when it ran."""

    audit_seq: int
    task_id: str
    kitchen_id: str
    sku_id: str
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class OpenSlaAlert:
    """An SLA alert raised and not yet resolved (restored into the SLA state at startup)."""

    agent_id: str
    alert_id: str
    order_id: str
    raised_at: float
    lead_s: float
    cause: str


@dataclass(frozen=True)
class LoopInputs:
    """Everything one tick reads."""

    now: float
    kitchens: tuple[KitchenSpec, ...]
    skus: Mapping[str, SkuSpec]
    tasks: tuple[OpenTask, ...]
    orders: tuple[OpenOrder, ...]
    ingestion_lag_s: Mapping[str, float]
    overrides: Mapping[str, Override]
    completions: tuple[Completion, ...]
    flagged: Mapping[str, str]  # task id -> flag reason, also of tasks no longer open


SLA_ALERT_KIND = "sla_at_risk"
#: Equipment that measures rather than cooks gives no capacity (as intake plans it).
NOT_CAPACITY = frozenset({"probe"})


def read_inputs(reader: Reader, *, now: float, after_audit_seq: int) -> LoopInputs:
    """Read one tick's inputs from one snapshot; completions after ``after_audit_seq``."""
    stations: dict[str, list[StationSpec]] = {}
    for row in reader.stations():
        stations.setdefault(str(row["kitchen_id"]), []).append(
            StationSpec(str(row["id"]), int(row["slots"]))
        )
    equipment: dict[str, list[EquipmentUnit]] = {}
    for row in reader.all_equipment():
        if row["kind"] in NOT_CAPACITY:
            continue
        equipment.setdefault(str(row["kitchen_id"]), []).append(
            EquipmentUnit(str(row["id"]), str(row["kind"]), row["station_id"], str(row["health"]))
        )
    last_sync: dict[str, float] = {}
    outbox: dict[str, int] = {}
    lag: dict[str, float] = {}
    for row in reader.kitchen_contact(now=now):
        kitchen_id = str(row["kitchen_id"])
        last_sync[kitchen_id] = float(row["last_sync_at"])
        outbox[kitchen_id] = int(row["outbox_depth"])
        if row["ingestion_lag_s"] is not None:
            lag[kitchen_id] = float(row["ingestion_lag_s"])
    skus = {
        str(row["id"]): SkuSpec(
            sku_id=str(row["id"]),
            station_id=str(row["station_id"]),
            duration_s=float(row["total_duration_s"]),
            freshness_window_min=float(row["freshness_window_min"]),
            priority=str(row["priority"]),
            equipment_kinds=frozenset(
                str(step["equipment_kind"])
                for step in json.loads(row["recipe_steps_json"])
                if step.get("equipment_kind") and not step.get("manual")
            ),
            ingredients=tuple(
                (str(ingredient), float(per_unit))
                for ingredient, per_unit in json.loads(row["ingredients_json"])
            ),
        )
        for row in reader.skus()
    }
    stock = _available_stock(reader, skus)
    kitchens = tuple(
        KitchenSpec(
            kitchen_id=str(row["id"]),
            status=str(row["status"]),
            stations=tuple(stations.get(str(row["id"]), ())),
            equipment=tuple(equipment[row["id"]]) if row["id"] in equipment else None,
            stock=stock.get(str(row["id"])),
            last_sync_at=last_sync.get(str(row["id"])),
            outbox_depth=outbox.get(str(row["id"]), 0),
        )
        for row in reader.kitchens()
    )
    tasks = tuple(
        OpenTask(
            task_id=str(row["id"]),
            kitchen_id=str(row["kitchen_id"]),
            station_id=str(row["station_id"]),
            sku_id=str(row["sku_id"]),
            quantity=int(row["quantity"]),
            state=str(row["state"]),
            start_after=float(row["start_after"]),
            finish_by=float(row["finish_by"]),
            planned_finish=row["planned_finish"],
            duration_s=float(row["duration_s"]),
            fencing_token=int(row["fencing_token"]),
            lease_agent_id=row["lease_agent_id"],
            start_by=row["start_by"],
            started_at=row["started_at"],
            order_ids=tuple(sorted(str(row["order_ids"] or "").split(",")))
            if row["order_ids"]
            else (),
            flag_reason=row["flag_reason"],
        )
        for row in reader.open_tasks_with_orders()
    )
    orders = tuple(
        OpenOrder(
            order_id=str(row["id"]),
            kitchen_id=row["kitchen_id"],
            promised_by=float(row["promised_by"]),
            transport_min=float(row["transport_min"]),
        )
        for row in reader.open_orders()
    )
    overrides = {
        str(row["scope"]): Override(
            level=str(row["level"]),
            actor=str(row["actor"]),
            reason=str(row["reason"]),
            until=row["until"],
        )
        for row in reader.backpressure_overrides()
    }
    completions = tuple(
        Completion(
            audit_seq=int(row["audit_seq"]),
            task_id=str(row["id"]),
            kitchen_id=str(row["kitchen_id"]),
            sku_id=str(row["sku_id"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )
        for row in reader.completions(after_audit_seq=after_audit_seq)
    )
    flagged = {str(row["id"]): str(row["flag_reason"]) for row in reader.flagged_tasks()}
    return LoopInputs(
        now=now,
        kitchens=kitchens,
        skus=skus,
        tasks=tasks,
        orders=orders,
        ingestion_lag_s=lag,
        overrides=overrides,
        completions=completions,
        flagged=flagged,
    )


def _available_stock(reader: Reader, skus: Mapping[str, SkuSpec]) -> dict[str, dict[str, float]]:
    """What each kitchen that tracks stock has left after reservations, as intake's planner
    reads it: an ingredient a kitchen does not track is not limited there (infinite)."""
    used = {ingredient for sku in skus.values() for ingredient, _ in sku.ingredients}
    if not used:
        return {}
    tracked: dict[str, dict[str, float]] = {}
    for row in reader.kitchen_stock():
        tracked.setdefault(str(row["kitchen_id"]), {})[str(row["ingredient"])] = float(
            row["quantity"]
        )
    return {
        kitchen_id: dict.fromkeys(used, math.inf) | quantities
        for kitchen_id, quantities in tracked.items()
    }


def open_sla_alerts(reader: Reader) -> list[OpenSlaAlert]:
    """SLA alerts still raised (to restore the SLA engine's state after a restart)."""
    return [
        OpenSlaAlert(
            agent_id=str(row["agent_id"]),
            alert_id=str(row["alert_id"]),
            order_id=str(row["order_id"]),
            raised_at=float(row["raised_at"]),
            lead_s=float(row["value"] or 0.0),
            cause=str(row["cause"] or "queue"),
        )
        for row in reader.open_alerts_of_kind(SLA_ALERT_KIND)
        if row["order_id"] is not None
    ]
