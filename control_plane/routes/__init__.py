"""HTTP routes, one module per resource. Each route validates, calls one library function and
lets :mod:`control_plane.problems` turn errors into problem+json."""

from fastapi import APIRouter

from control_plane.routes import (
    agents,
    alerts,
    audit_trail,
    backpressure,
    enrollment,
    haccp,
    health,
    kitchens,
    orders,
    prep_times,
    skus,
    stats,
    stock,
    tasks,
)

# Routes are matched in order, and matching costs per route: the agents' sync, the busiest
# path by far (every kitchen, every few seconds), comes first; order intake, the busiest
# operator path at peak, right after the probes (it was behind 19 catalogue routes).
ROUTERS: tuple[APIRouter, ...] = (
    agents.router,
    health.router,
    orders.router,
    kitchens.router,
    stock.router,
    skus.router,
    tasks.router,
    alerts.router,
    audit_trail.router,
    enrollment.router,
    stats.router,
    backpressure.router,
    prep_times.router,
    haccp.router,
)
