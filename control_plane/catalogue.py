"""Kitchens, their stations and equipment, and SKUs: created by operators, read by everyone."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from control_plane import audit, fleet
from control_plane.audit import iso
from control_plane.errors import Conflict, NotFound, StateConflict, Unprocessable
from control_plane.queries import Reader
from control_plane.schemas import (
    EquipmentCreate,
    EquipmentUpdate,
    KitchenCreate,
    SkuCreate,
    SkuUpdate,
    StationIn,
    StationUpdate,
)
from control_plane.store import Store, Writer


def create_kitchen(
    store: Store, kitchen: KitchenCreate, *, now: float, actor: str
) -> dict[str, Any]:
    """Create a kitchen with its stations; :class:`Conflict` if the id exists."""
    station_ids = [station.id for station in kitchen.stations]
    if len(set(station_ids)) != len(station_ids):
        raise Unprocessable("station ids must be unique within a kitchen")
    with store.write() as tx:
        if tx.kitchen(kitchen.id) is not None:
            raise Conflict(f"kitchen {kitchen.id!r} already exists")
        tx.insert_kitchen(
            kitchen_id=kitchen.id,
            name=kitchen.name,
            timezone=kitchen.timezone,
            location=kitchen.location,
            status=kitchen.status,
            created_at=now,
        )
        for station in kitchen.stations:
            tx.insert_station(
                kitchen_id=kitchen.id, station_id=station.id, name=station.name, slots=station.slots
            )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="kitchen.created",
            subject_type="kitchen",
            subject_id=kitchen.id,
            kitchen_id=kitchen.id,
            details={"stations": station_ids, "status": kitchen.status},
        )
        return kitchen_view(tx, kitchen.id)


def set_kitchen_status(
    store: Store, kitchen_id: str, status: str, *, now: float, actor: str
) -> dict[str, Any]:
    """Pause, resume or take a kitchen offline (audited)."""
    with store.write() as tx:
        row = tx.kitchen(kitchen_id)
        if row is None:
            raise NotFound(f"no kitchen {kitchen_id!r}")
        tx.set_kitchen_status(kitchen_id=kitchen_id, status=status)
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="kitchen.status_changed",
            subject_type="kitchen",
            subject_id=kitchen_id,
            kitchen_id=kitchen_id,
            details={"from": row["status"], "to": status},
        )
        return kitchen_view(tx, kitchen_id)


def add_equipment(
    store: Store, kitchen_id: str, equipment: EquipmentCreate, *, now: float, actor: str
) -> dict[str, Any]:
    """Register a piece of equipment at a kitchen station."""
    with store.write() as tx:
        if tx.kitchen(kitchen_id) is None:
            raise NotFound(f"no kitchen {kitchen_id!r}")
        if (
            equipment.station_id is not None
            and tx.station(kitchen_id, equipment.station_id) is None
        ):
            raise Unprocessable(f"kitchen {kitchen_id!r} has no station {equipment.station_id!r}")
        if tx.equipment_item(kitchen_id, equipment.id) is not None:
            raise Conflict(f"kitchen {kitchen_id!r} already has equipment {equipment.id!r}")
        tx.upsert_equipment(
            kitchen_id=kitchen_id,
            equipment_id=equipment.id,
            kind=equipment.kind.value,
            station_id=equipment.station_id,
            health="offline",
            updated_at=now,
        )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="equipment.added",
            subject_type="equipment",
            subject_id=equipment.id,
            kitchen_id=kitchen_id,
            station_id=equipment.station_id,
            device_id=equipment.id,
            details={"kind": equipment.kind.value},
        )
        row = tx.equipment_item(kitchen_id, equipment.id)
        assert row is not None
        return equipment_view(row)


def create_sku(store: Store, sku: SkuCreate, *, now: float, actor: str) -> dict[str, Any]:
    """Add a SKU to the catalogue; :class:`Conflict` if the id exists."""
    steps = [step.model_dump(mode="json") for step in sku.steps]
    with store.write() as tx:
        if tx.sku(sku.id) is not None:
            raise Conflict(f"SKU {sku.id!r} already exists")
        tx.insert_sku(
            sku_id=sku.id,
            name=sku.name,
            station_id=sku.station_id,
            recipe_steps_json=json.dumps(steps, separators=(",", ":")),
            total_duration_s=sum(step.duration_s for step in sku.steps),
            freshness_window_min=sku.freshness_window_min,
            priority=sku.priority,
            hold=sku.hold,
            created_at=now,
        )
        _set_planning(tx, sku.id, sku)
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="sku.created",
            subject_type="sku",
            subject_id=sku.id,
            details={
                "station_id": sku.station_id,
                "steps": len(steps),
                "ingredients": [use.model_dump() for use in sku.ingredients],
                "max_batch_units": sku.max_batch_units,
            },
        )
        row = tx.sku(sku.id)
        assert row is not None
        return sku_view(row)


def kitchen_view(
    reader: Reader, kitchen_id: str, *, now: float | None = None, unreachable_after_s: float = 0
) -> dict[str, Any]:
    """A kitchen with stations, equipment and (given ``now``) whether its agents are reachable."""
    row = reader.kitchen(kitchen_id)
    if row is None:
        raise NotFound(f"no kitchen {kitchen_id!r}")
    last_sync = fleet.kitchen_last_sync(reader, kitchen_id)
    return {
        "id": row["id"],
        "name": row["name"],
        "timezone": row["timezone"],
        "location": row["location"],
        "status": row["status"],
        "reachable": now is not None
        and fleet.reachable(
            last_seen_at=last_sync,
            revoked=False,
            now=now,
            unreachable_after_s=unreachable_after_s,
        ),
        "last_agent_sync_at": iso(last_sync),
        "stations": [station_view(s) for s in reader.stations(kitchen_id)],
        "equipment": [equipment_view(e) for e in reader.equipment(kitchen_id)],
    }


def station_view(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "slots": row["slots"]}


def _audit_operator(
    tx: Writer,
    *,
    now: float,
    actor: str,
    action: str,
    subject: tuple[str, str],
    kitchen_id: str | None = None,
    station_id: str | None = None,
    device_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    audit.append(
        tx,
        at=now,
        actor_type="operator",
        actor_id=actor,
        action=action,
        subject_type=subject[0],
        subject_id=subject[1],
        kitchen_id=kitchen_id,
        station_id=station_id,
        device_id=device_id,
        details=details,
    )


def add_station(
    store: Store, kitchen_id: str, station: StationIn, *, now: float, actor: str
) -> dict[str, Any]:
    """Add a station (with its parallel slots) to a kitchen."""
    with store.write() as tx:
        if tx.kitchen(kitchen_id) is None:
            raise NotFound(f"no kitchen {kitchen_id!r}")
        if tx.station(kitchen_id, station.id) is not None:
            raise Conflict(f"kitchen {kitchen_id!r} already has station {station.id!r}")
        tx.insert_station(
            kitchen_id=kitchen_id, station_id=station.id, name=station.name, slots=station.slots
        )
        _audit_operator(
            tx,
            now=now,
            actor=actor,
            action="station.added",
            subject=("station", f"{kitchen_id}/{station.id}"),
            kitchen_id=kitchen_id,
            station_id=station.id,
            details={"slots": station.slots},
        )
        row = tx.station(kitchen_id, station.id)
        assert row is not None
        return station_view(row)


def update_station(
    store: Store,
    kitchen_id: str,
    station_id: str,
    change: StationUpdate,
    *,
    now: float,
    actor: str,
) -> dict[str, Any]:
    """Rename a station or change its slots (planning uses the new slots from now on)."""
    with store.write() as tx:
        row = tx.station(kitchen_id, station_id)
        if row is None:
            raise NotFound(f"kitchen {kitchen_id!r} has no station {station_id!r}")
        name = change.name if change.name is not None else str(row["name"])
        slots = change.slots if change.slots is not None else int(row["slots"])
        tx.update_station(kitchen_id=kitchen_id, station_id=station_id, name=name, slots=slots)
        _audit_operator(
            tx,
            now=now,
            actor=actor,
            action="station.updated",
            subject=("station", f"{kitchen_id}/{station_id}"),
            kitchen_id=kitchen_id,
            station_id=station_id,
            details={"from": station_view(row), "to": {"name": name, "slots": slots}},
        )
        updated = tx.station(kitchen_id, station_id)
        assert updated is not None
        return station_view(updated)


def remove_station(
    store: Store, kitchen_id: str, station_id: str, *, now: float, actor: str
) -> None:
    """Remove a station with no open tasks and no equipment; :class:`StateConflict` if in use."""
    with store.write() as tx:
        if tx.station(kitchen_id, station_id) is None:
            raise NotFound(f"kitchen {kitchen_id!r} has no station {station_id!r}")
        tasks, equipment = tx.station_in_use(kitchen_id, station_id)
        if tasks or equipment:
            raise StateConflict(
                f"station {station_id!r} still has {tasks} open task(s) and {equipment}"
                " piece(s) of equipment",
                reason="station_in_use",
            )
        tx.delete_station(kitchen_id=kitchen_id, station_id=station_id)
        _audit_operator(
            tx,
            now=now,
            actor=actor,
            action="station.removed",
            subject=("station", f"{kitchen_id}/{station_id}"),
            kitchen_id=kitchen_id,
            station_id=station_id,
        )


def update_equipment(
    store: Store,
    kitchen_id: str,
    equipment_id: str,
    change: EquipmentUpdate,
    *,
    now: float,
    actor: str,
) -> dict[str, Any]:
    """Move equipment to another station (or none)."""
    with store.write() as tx:
        row = tx.equipment_item(kitchen_id, equipment_id)
        if row is None:
            raise NotFound(f"kitchen {kitchen_id!r} has no equipment {equipment_id!r}")
        if change.station_id is not None and tx.station(kitchen_id, change.station_id) is None:
            raise Unprocessable(f"kitchen {kitchen_id!r} has no station {change.station_id!r}")
        tx.update_equipment(
            kitchen_id=kitchen_id,
            equipment_id=equipment_id,
            station_id=change.station_id,
            updated_at=now,
        )
        _audit_operator(
            tx,
            now=now,
            actor=actor,
            action="equipment.moved",
            subject=("equipment", equipment_id),
            kitchen_id=kitchen_id,
            station_id=change.station_id,
            device_id=equipment_id,
            details={"from_station_id": row["station_id"], "to_station_id": change.station_id},
        )
        updated = tx.equipment_item(kitchen_id, equipment_id)
        assert updated is not None
        return equipment_view(updated)


def remove_equipment(
    store: Store, kitchen_id: str, equipment_id: str, *, now: float, actor: str
) -> None:
    """Decommission equipment (a device that reports again is registered again, unassigned)."""
    with store.write() as tx:
        if tx.equipment_item(kitchen_id, equipment_id) is None:
            raise NotFound(f"kitchen {kitchen_id!r} has no equipment {equipment_id!r}")
        tx.delete_equipment(kitchen_id=kitchen_id, equipment_id=equipment_id)
        _audit_operator(
            tx,
            now=now,
            actor=actor,
            action="equipment.removed",
            subject=("equipment", equipment_id),
            kitchen_id=kitchen_id,
            device_id=equipment_id,
        )


def update_sku(
    store: Store, sku_id: str, sku: SkuUpdate, *, now: float, actor: str
) -> dict[str, Any]:
    """Replace a SKU's recipe and rules. Tasks not yet leased get the new recipe with their
    lease; leased tasks keep the recipe they were leased with (the kitchen has it)."""
    steps = [step.model_dump(mode="json") for step in sku.steps]
    with store.write() as tx:
        row = tx.sku(sku_id)
        if row is None:
            raise NotFound(f"no SKU {sku_id!r}")
        tx.update_sku(
            sku_id=sku_id,
            name=sku.name,
            recipe_steps_json=json.dumps(steps, separators=(",", ":")),
            total_duration_s=sum(step.duration_s for step in sku.steps),
            freshness_window_min=sku.freshness_window_min,
            priority=sku.priority,
            hold=sku.hold,
        )
        _set_planning(tx, sku_id, sku)
        _audit_operator(
            tx,
            now=now,
            actor=actor,
            action="sku.updated",
            subject=("sku", sku_id),
            details={
                "steps": len(steps),
                "freshness_window_min": sku.freshness_window_min,
                "ingredients": [use.model_dump() for use in sku.ingredients],
                "max_batch_units": sku.max_batch_units,
            },
        )
        updated = tx.sku(sku_id)
        assert updated is not None
        return sku_view(updated)


def equipment_view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "station_id": row["station_id"],
        "health": row["health"],
    }


def sku_view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "station_id": row["station_id"],
        "steps": json.loads(row["recipe_steps_json"]),
        "freshness_window_min": row["freshness_window_min"],
        "priority": row["priority"],
        "hold": row["hold"],
        "ingredients": [
            {"ingredient": ingredient, "per_unit": per_unit}
            for ingredient, per_unit in json.loads(row["ingredients_json"])
        ],
        "max_batch_units": row["max_batch_units"],
    }


def _set_planning(tx: Writer, sku_id: str, sku: SkuCreate | SkuUpdate) -> None:
    ingredients = [[use.ingredient, use.per_unit] for use in sku.ingredients]
    tx.set_sku_planning(
        sku_id=sku_id,
        ingredients_json=json.dumps(ingredients, separators=(",", ":")),
        max_batch_units=sku.max_batch_units,
    )


def stats(reader: Reader) -> dict[str, Any]:
    """Counts of orders by status (overall and per kitchen) and tasks by state."""
    kitchens: dict[str, dict[str, int]] = {
        row["id"]: dict.fromkeys(("accepted", "planned", "in_prep", "ready"), 0)
        for row in reader.kitchens()
    }
    for row in reader.count_orders_by_kitchen_status():
        kitchens.setdefault(row["kitchen_id"], {})[row["status"]] = row["n"]
    return {
        "orders_by_status": {row["status"]: row["n"] for row in reader.count_orders_by_status()},
        "kitchens": kitchens,
        "tasks_by_state": {row["state"]: row["n"] for row in reader.count_tasks_by_state()},
    }
