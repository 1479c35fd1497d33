"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control_plane.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(services: ServicesDep) -> dict[str, str]:
    """200 while the process can read its store."""
    with services.store.read() as reader:
        reader.last_audit()
    return {"status": "ok"}


@router.get("/metrics")
def metrics(services: ServicesDep) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
