"""``/v1/skus``: the SKU catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import catalogue
from control_plane.deps import AdminDep, ServicesDep, ViewerDep
from control_plane.errors import NotFound
from control_plane.schemas import SkuCreate

router = APIRouter(prefix="/v1/skus", tags=["skus"])


@router.post("", status_code=201)
def create_sku(body: SkuCreate, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    return catalogue.create_sku(services.store, body, now=services.clock(), actor=who.name)


@router.get("")
def list_skus(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    with services.store.read() as reader:
        return {"skus": [catalogue.sku_view(row) for row in reader.skus()]}


@router.get("/{sku_id}")
def get_sku(sku_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    with services.store.read() as reader:
        row = reader.sku(sku_id)
    if row is None:
        raise NotFound(f"no SKU {sku_id!r}")
    return catalogue.sku_view(row)
