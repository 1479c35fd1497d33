"""``/v1/stats``: counts for dashboards and tests."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import catalogue
from control_plane.deps import ServicesDep, ViewerDep

router = APIRouter(prefix="/v1/stats", tags=["stats"])


@router.get("")
def get_stats(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    with services.store.read() as reader:
        return catalogue.stats(reader)
