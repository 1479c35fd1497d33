"""``/v1/kitchens/{kitchen_id}/haccp``: a kitchen's HACCP evidence, for an inspector."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from control_plane.deps import ServicesDep, ViewerDep
from control_plane.errors import NotFound
from control_plane.haccp import HaccpEvidencePage, evidence_view
from control_plane.problems import problem_responses as errors

router = APIRouter(tags=["haccp"], responses=errors(401, 403))


@router.get(
    "/v1/kitchens/{kitchen_id}/haccp", response_model=HaccpEvidencePage, responses=errors(404)
)
def kitchen_evidence(
    kitchen_id: str,
    services: ServicesDep,
    _: ViewerDep,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    equipment_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    """Evidence measured in ``[since, until)`` (ISO 8601 with offset; on the control plane's
    timeline, ``measured_server_at``, as agent clocks may be off), in the order it arrived,
    e.g. ``?since=2026-05-01T00:00:00Z&equipment_id=fridge-1``; pass ``next_cursor`` back as
    ``cursor`` for the next page."""
    with services.store.read() as reader:
        if reader.kitchen(kitchen_id) is None:
            raise NotFound(f"no kitchen {kitchen_id!r}")
        rows = reader.haccp_evidence(
            kitchen_id=kitchen_id,
            since=None if since is None else datetime.timestamp(since),
            until=None if until is None else datetime.timestamp(until),
            equipment_id=equipment_id,
            limit=limit,
            after_id=int(cursor or 0),
        )
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return {"evidence": [evidence_view(row) for row in rows], "next_cursor": next_cursor}
