"""``/v1/prep-times``: the learned prep-time model (per kitchen x SKU) and its error."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from control_plane.deps import ServicesDep, ViewerDep
from control_plane.prep_times_view import prep_times_view
from control_plane.problems import problem_responses as errors
from control_plane.views import _View

router = APIRouter(prefix="/v1/prep-times", tags=["planning"], responses=errors(401, 403))


class PrepErrorOut(_View):
    count: int
    mean_abs_error_s: float
    bias_s: float
    p90_coverage: float


class PrepSeriesOut(_View):
    kitchen_id: str
    sku_id: str
    p50_s: float
    p90_s: float
    source: Literal["kitchen_sku", "sku", "nominal"]
    samples: int
    completions: int
    outliers: int
    nominal_s: float
    error: PrepErrorOut


class PrepTimesOut(_View):
    series: list[PrepSeriesOut]
    error: PrepErrorOut


@router.get("", response_model=PrepTimesOut)
def get_prep_times(
    services: ServicesDep,
    _: ViewerDep,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
    sku_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """p50/p90 prep time of every SKU at every kitchen that offers it: learned there
    (``kitchen_sku``), across kitchens (``sku``) or the recipe's (``nominal``); with the
    prediction error (actual - predicted p50) so far."""
    with services.store.read() as reader:
        return prep_times_view(
            reader, services.planning.prep_model(), kitchen_id=kitchen_id, sku_id=sku_id
        )
