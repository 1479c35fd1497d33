"""HTTP routes, one module per resource. Each route validates, calls one library function and
lets :mod:`control_plane.problems` turn errors into problem+json."""

from fastapi import APIRouter

from control_plane.routes import (
    agents,
    audit_trail,
    enrollment,
    health,
    kitchens,
    orders,
    skus,
    stats,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    kitchens.router,
    skus.router,
    orders.router,
    audit_trail.router,
    enrollment.router,
    agents.router,
    stats.router,
)
