"""HTTP routes, one module per resource. Each route validates, calls one library function and
lets :mod:`control_plane.problems` turn errors into problem+json."""

from fastapi import APIRouter

from control_plane.routes import (
    agents,
    alerts,
    audit_trail,
    enrollment,
    health,
    kitchens,
    orders,
    skus,
    stats,
    tasks,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    kitchens.router,
    skus.router,
    orders.router,
    tasks.router,
    alerts.router,
    audit_trail.router,
    enrollment.router,
    agents.router,
    stats.router,
)
