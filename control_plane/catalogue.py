"""Kitchens, their stations and equipment, and SKUs: created by operators, read by everyone."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from control_plane import audit
from control_plane.errors import Conflict, NotFound, Unprocessable
from control_plane.queries import Reader
from control_plane.schemas import EquipmentCreate, KitchenCreate, SkuCreate
from control_plane.store import Store


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
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="sku.created",
            subject_type="sku",
            subject_id=sku.id,
            details={"station_id": sku.station_id, "steps": len(steps)},
        )
        row = tx.sku(sku.id)
        assert row is not None
        return sku_view(row)


def kitchen_view(reader: Reader, kitchen_id: str) -> dict[str, Any]:
    row = reader.kitchen(kitchen_id)
    if row is None:
        raise NotFound(f"no kitchen {kitchen_id!r}")
    return {
        "id": row["id"],
        "name": row["name"],
        "timezone": row["timezone"],
        "location": row["location"],
        "status": row["status"],
        "stations": [
            {"id": s["id"], "name": s["name"], "slots": s["slots"]}
            for s in reader.stations(kitchen_id)
        ],
        "equipment": [equipment_view(e) for e in reader.equipment(kitchen_id)],
    }


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
    }


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
