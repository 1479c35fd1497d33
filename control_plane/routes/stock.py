"""``/v1/kitchens/{id}/stock``: a kitchen's ingredient stock and its deliveries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import stock
from control_plane.deps import OperatorDep, ServicesDep, ViewerDep
from control_plane.problems import problem_responses as errors
from control_plane.schemas import StockDelivery
from control_plane.views import KitchenStockOut

router = APIRouter(prefix="/v1/kitchens", tags=["stock"], responses=errors(401, 403))


@router.get("/{kitchen_id}/stock", response_model=KitchenStockOut, responses=errors(404))
def get_stock(kitchen_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """The ingredients the kitchen tracks, how much is left (after reservations) and whether
    each is below its low-water mark. Untracked ingredients are not limited."""
    with services.store.read() as reader:
        return stock.stock_view(reader, kitchen_id)


@router.post(
    "/{kitchen_id}/stock/deliveries",
    response_model=KitchenStockOut,
    responses=errors(404),
)
def deliver(
    kitchen_id: str, body: StockDelivery, services: ServicesDep, who: OperatorDep
) -> dict[str, Any]:
    """Record a delivery (operator, audited): each line adds to the ingredient's stock and may
    set its low-water mark; stock back at its mark re-arms the low-stock alert."""
    return stock.deliver(services.store, kitchen_id, body, now=services.clock(), actor=who.name)
