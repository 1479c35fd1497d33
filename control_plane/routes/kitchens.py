"""``/v1/kitchens``: kitchens, their stations and equipment."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import catalogue
from control_plane.deps import AdminDep, OperatorDep, ServicesDep, ViewerDep
from control_plane.errors import NotFound
from control_plane.problems import problem_responses as errors
from control_plane.schemas import (
    EquipmentCreate,
    EquipmentUpdate,
    KitchenCreate,
    KitchenStatusUpdate,
    StationIn,
    StationUpdate,
)
from control_plane.views import (
    EquipmentList,
    EquipmentOut,
    KitchenList,
    KitchenOut,
    StationList,
    StationOut,
)

router = APIRouter(prefix="/v1/kitchens", tags=["kitchens"], responses=errors(401, 403))


def _view(services: ServicesDep, kitchen_id: str) -> dict[str, Any]:
    with services.store.read() as reader:
        return catalogue.kitchen_view(
            reader,
            kitchen_id,
            now=services.clock(),
            unreachable_after_s=services.settings.agent_unreachable_after_s,
        )


@router.post("", status_code=201, response_model=KitchenOut, responses=errors(409))
def create_kitchen(body: KitchenCreate, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Create a kitchen with its stations (admin)."""
    catalogue.create_kitchen(services.store, body, now=services.clock(), actor=who.name)
    return _view(services, body.id)


@router.get("", response_model=KitchenList)
def list_kitchens(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """Every kitchen, with stations, equipment and whether its agents are reachable."""
    with services.store.read() as reader:
        ids = [str(row["id"]) for row in reader.kitchens()]
    return {"kitchens": [_view(services, kitchen_id) for kitchen_id in ids]}


@router.get("/{kitchen_id}", response_model=KitchenOut, responses=errors(404))
def get_kitchen(kitchen_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """One kitchen."""
    return _view(services, kitchen_id)


@router.put("/{kitchen_id}/status", response_model=KitchenOut, responses=errors(404))
def set_status(
    kitchen_id: str, body: KitchenStatusUpdate, services: ServicesDep, who: OperatorDep
) -> dict[str, Any]:
    """Pause, resume or take a kitchen offline (operator); paused kitchens get no new orders."""
    catalogue.set_kitchen_status(
        services.store, kitchen_id, body.status, now=services.clock(), actor=who.name
    )
    return _view(services, kitchen_id)


@router.get("/{kitchen_id}/stations", response_model=StationList, responses=errors(404))
def list_stations(kitchen_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """A kitchen's stations and their parallel slots."""
    return {"stations": _view(services, kitchen_id)["stations"]}


@router.post(
    "/{kitchen_id}/stations",
    status_code=201,
    response_model=StationOut,
    responses=errors(404, 409),
)
def add_station(
    kitchen_id: str, body: StationIn, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Add a station to a kitchen (admin)."""
    return catalogue.add_station(
        services.store, kitchen_id, body, now=services.clock(), actor=who.name
    )


@router.patch(
    "/{kitchen_id}/stations/{station_id}", response_model=StationOut, responses=errors(404)
)
def update_station(
    kitchen_id: str, station_id: str, body: StationUpdate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Rename a station or change its slots (admin)."""
    return catalogue.update_station(
        services.store, kitchen_id, station_id, body, now=services.clock(), actor=who.name
    )


@router.delete("/{kitchen_id}/stations/{station_id}", status_code=204, responses=errors(404, 409))
def remove_station(kitchen_id: str, station_id: str, services: ServicesDep, who: AdminDep) -> None:
    """Remove a station without open tasks or equipment (admin); 409 while in use."""
    catalogue.remove_station(
        services.store, kitchen_id, station_id, now=services.clock(), actor=who.name
    )


@router.get("/{kitchen_id}/equipment", response_model=EquipmentList, responses=errors(404))
def list_equipment(kitchen_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """A kitchen's equipment with its health (from device birth, death and telemetry)."""
    return {"equipment": _view(services, kitchen_id)["equipment"]}


@router.post(
    "/{kitchen_id}/equipment",
    status_code=201,
    response_model=EquipmentOut,
    responses=errors(404, 409),
)
def add_equipment(
    kitchen_id: str, body: EquipmentCreate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Register equipment at a kitchen station (admin)."""
    return catalogue.add_equipment(
        services.store, kitchen_id, body, now=services.clock(), actor=who.name
    )


@router.get(
    "/{kitchen_id}/equipment/{equipment_id}", response_model=EquipmentOut, responses=errors(404)
)
def get_equipment(
    kitchen_id: str, equipment_id: str, services: ServicesDep, _: ViewerDep
) -> dict[str, Any]:
    """One piece of equipment."""
    with services.store.read() as reader:
        row = reader.equipment_item(kitchen_id, equipment_id)
    if row is None:
        raise NotFound(f"kitchen {kitchen_id!r} has no equipment {equipment_id!r}")
    return catalogue.equipment_view(row)


@router.patch(
    "/{kitchen_id}/equipment/{equipment_id}", response_model=EquipmentOut, responses=errors(404)
)
def update_equipment(
    kitchen_id: str,
    equipment_id: str,
    body: EquipmentUpdate,
    services: ServicesDep,
    who: AdminDep,
) -> dict[str, Any]:
    """Move equipment to another station, or detach it (admin)."""
    return catalogue.update_equipment(
        services.store, kitchen_id, equipment_id, body, now=services.clock(), actor=who.name
    )


@router.delete("/{kitchen_id}/equipment/{equipment_id}", status_code=204, responses=errors(404))
def remove_equipment(
    kitchen_id: str, equipment_id: str, services: ServicesDep, who: AdminDep
) -> None:
    """Decommission equipment (admin)."""
    catalogue.remove_equipment(
        services.store, kitchen_id, equipment_id, now=services.clock(), actor=who.name
    )
