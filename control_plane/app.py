"""Build the control plane's FastAPI application.

>>> app = create_app(Settings(db_path=Path("/tmp/brigade-cp.db")))  # doctest: +SKIP
>>> uvicorn.run(app, port=8700)                                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from control_plane.admission_middleware import AdmissionMiddleware, budgets_from
from control_plane.config import Settings
from control_plane.control_loop import ControlLoop
from control_plane.deps import Services
from control_plane.doorbell import WorkDoorbell
from control_plane.intake import KeysInFlight, purge_expired_keys
from control_plane.intake_writer import IntakeWriter
from control_plane.loop_process import LoopProcess
from control_plane.metrics import Metrics
from control_plane.observability import RequestMiddleware
from control_plane.planning_state import PlanningState
from control_plane.problems import document_problems, install_problem_handlers
from control_plane.routes import ROUTERS
from control_plane.store import Store

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    loop_process: bool = False,
    intake_process: bool = False,
) -> FastAPI:
    """The app for ``settings``; the store is opened (and migrated) here, closed on shutdown.

    The control loop runs on a thread of this process, or with ``loop_process`` in a child
    process (:mod:`control_plane.loop_process`; the real clock only, as the child has its
    own). With ``intake_process`` orders are decided in a child process as well
    (:mod:`control_plane.intake_writer`), else on the event loop."""
    if loop_process and clock is not time.time:
        raise ValueError("a control loop in its own process runs on the real clock")
    the_store = store if store is not None else Store.open(settings.db_path)
    metrics = Metrics()
    planning = PlanningState()
    control_loop: ControlLoop | LoopProcess = (
        LoopProcess(settings, metrics=metrics, planning=planning)
        if loop_process
        else ControlLoop(
            store=the_store, settings=settings, metrics=metrics, planning=planning, clock=clock
        )
    )
    intake_writer = IntakeWriter(settings, metrics=metrics) if intake_process else None

    async def purge_keys_every_interval() -> None:
        """Forget idempotency answers past their retention, once per interval."""
        while True:
            await run_in_threadpool(purge_expired_keys, the_store, now=clock(), settings=settings)
            await asyncio.sleep(settings.idempotency_purge_interval_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        purger = asyncio.create_task(purge_keys_every_interval(), name="idempotency-purger")
        control_loop.start()
        if intake_writer is not None:
            await intake_writer.start()
        try:
            yield
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            if intake_writer is not None:
                await intake_writer.stop()
            await run_in_threadpool(control_loop.stop)
            the_store.close()

    app = FastAPI(
        title="Brigade control plane",
        version="1.0",
        summary="Order intake, planning, leases and audit for fresh-food kitchens",
        lifespan=lifespan,
    )
    app.state.services = Services(
        settings=settings,
        store=the_store,
        metrics=metrics,
        clock=clock,
        in_flight=KeysInFlight(),
        planning=planning,
        intake_writer=intake_writer,
    )
    app.state.control_loop = control_loop
    # Agents long-poll it (GET /v1/agents/work); intake, cancellation and re-planning ring it.
    doorbell = WorkDoorbell()
    app.state.doorbell = doorbell
    metrics.doorbell_waiters.set_function(lambda: doorbell.waiting)
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Added first so it runs inside RequestMiddleware: refusals get a request id, are logged and
    # timed, and the latency fed back to the limiter excludes the client's upload time.
    app.add_middleware(AdmissionMiddleware, metrics=metrics, budgets=budgets_from(settings))
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
