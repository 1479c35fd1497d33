"""``/v1/stats``: counts for dashboards and tests."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import catalogue
from control_plane.deps import ServicesDep, ViewerDep
from control_plane.problems import problem_responses as errors
from control_plane.views import Stats

router = APIRouter(prefix="/v1/stats", tags=["stats"], responses=errors(401, 403))


@router.get("", response_model=Stats)
def get_stats(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """Orders by status (overall and per kitchen) and tasks by state."""
    with services.store.read() as reader:
        return catalogue.stats(reader)
