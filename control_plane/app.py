"""Build the control plane's FastAPI application.

>>> app = create_app(Settings(db_path=Path("/tmp/brigade-cp.db")))  # doctest: +SKIP
>>> uvicorn.run(app, port=8700)                                     # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from control_plane.config import Settings
from control_plane.deps import Services
from control_plane.metrics import Metrics
from control_plane.observability import RequestMiddleware
from control_plane.problems import install_problem_handlers
from control_plane.routes import ROUTERS
from control_plane.store import Store

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The app for ``settings``; the store is opened (and migrated) here, closed on shutdown."""
    the_store = store if store is not None else Store.open(settings.db_path)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            the_store.close()

    app = FastAPI(
        title="Brigade control plane",
        version="1.0",
        summary="Order intake, planning, leases and audit for fresh-food kitchens",
        lifespan=lifespan,
    )
    app.state.services = Services(settings=settings, store=the_store, metrics=metrics, clock=clock)
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
