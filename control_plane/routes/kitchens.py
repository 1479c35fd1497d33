"""``/v1/kitchens``: kitchens, their stations and equipment."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import catalogue
from control_plane.deps import AdminDep, OperatorDep, ServicesDep, ViewerDep
from control_plane.schemas import EquipmentCreate, KitchenCreate, KitchenStatusUpdate

router = APIRouter(prefix="/v1/kitchens", tags=["kitchens"])


@router.post("", status_code=201)
def create_kitchen(body: KitchenCreate, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    return catalogue.create_kitchen(services.store, body, now=services.clock(), actor=who.name)


@router.get("")
def list_kitchens(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    with services.store.read() as reader:
        ids = [row["id"] for row in reader.kitchens()]
        return {"kitchens": [catalogue.kitchen_view(reader, kitchen_id) for kitchen_id in ids]}


@router.get("/{kitchen_id}")
def get_kitchen(kitchen_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    with services.store.read() as reader:
        return catalogue.kitchen_view(reader, kitchen_id)


@router.put("/{kitchen_id}/status")
def set_status(
    kitchen_id: str, body: KitchenStatusUpdate, services: ServicesDep, who: OperatorDep
) -> dict[str, Any]:
    return catalogue.set_kitchen_status(
        services.store, kitchen_id, body.status, now=services.clock(), actor=who.name
    )


@router.post("/{kitchen_id}/equipment", status_code=201)
def add_equipment(
    kitchen_id: str, body: EquipmentCreate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    return catalogue.add_equipment(
        services.store, kitchen_id, body, now=services.clock(), actor=who.name
    )
