"""``/v1/skus``: the SKU catalogue and its recipes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import catalogue
from control_plane.deps import AdminDep, ServicesDep, ViewerDep
from control_plane.errors import NotFound
from control_plane.problems import problem_responses as errors
from control_plane.schemas import SkuCreate, SkuUpdate
from control_plane.views import SkuList, SkuOut

router = APIRouter(prefix="/v1/skus", tags=["skus"], responses=errors(401, 403))


@router.post("", status_code=201, response_model=SkuOut, responses=errors(409))
def create_sku(body: SkuCreate, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Add a SKU with its recipe (admin). Kitchens with its station offer it."""
    return catalogue.create_sku(services.store, body, now=services.clock(), actor=who.name)


@router.get("", response_model=SkuList)
def list_skus(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """The whole catalogue."""
    with services.store.read() as reader:
        return {"skus": [catalogue.sku_view(row) for row in reader.skus()]}


@router.get("/{sku_id}", response_model=SkuOut, responses=errors(404))
def get_sku(sku_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """One SKU with its recipe."""
    with services.store.read() as reader:
        row = reader.sku(sku_id)
    if row is None:
        raise NotFound(f"no SKU {sku_id!r}")
    return catalogue.sku_view(row)


@router.put("/{sku_id}", response_model=SkuOut, responses=errors(404))
def update_sku(
    sku_id: str, body: SkuUpdate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Replace a SKU's recipe and rules (admin); leased tasks keep the recipe they were given."""
    return catalogue.update_sku(services.store, sku_id, body, now=services.clock(), actor=who.name)
