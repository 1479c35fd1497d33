"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from control_plane import fleet
from control_plane.deps import ServicesDep
from control_plane.views import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(services: ServicesDep) -> dict[str, str]:
    """200 while the process can read its store."""
    with services.store.read() as reader:
        reader.last_audit()
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(services: ServicesDep) -> Response:
    """Prometheus text exposition: the request path's metrics and the control loop's."""
    now = services.clock()
    with services.store.read() as reader:
        holders = fleet.stale_agent_ids(
            reader, now=now, unreachable_after_s=services.settings.agent_unreachable_after_s
        )
        stranded = reader.tasks(
            kitchen_id=None,
            state=None,
            order_id=None,
            open_leases_of_agents=holders,
            limit=100_000,
            after_position=0,
        )
    services.metrics.stranded_tasks.set(len(stranded))
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
