"""Overload protection of the API itself: an adaptive concurrency limit per traffic class (SPEC 5).

Every request is put in one traffic class, and each class has its own budget, adapted by the
pure core :mod:`control_plane.planning.admission`; a request over its class's limit is answered
``503`` ``overloaded`` with ``Retry-After`` at once, before any work is done. Budgets are
separate so a fleet of agents syncing cannot starve order intake, nor operators' reads either.

>>> traffic_class("POST", "/v1/orders"), traffic_class("GET", "/v1/orders")
('intake', 'read')
>>> traffic_class("POST", "/v1/agents/sync"), traffic_class("GET", "/healthz") is None
('sync', True)

The work doorbell (``GET /v1/agents/work``) is never limited either: its latency is the wait
an agent asked for, not congestion, and would teach the limiter that the server is slow. It
is bounded instead by one held request per agent, and costs one indexed read per answer.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.config import Settings
from control_plane.metrics import Metrics
from control_plane.planning.admission import (
    Admission,
    AdmissionState,
    ClassBudget,
    acquire,
    release,
)
from control_plane.problem_json import PROBLEM_MEDIA_TYPE, encode_problem, problem_body

__all__ = [
    "REFUSED_SCOPE_KEY",
    "TRAFFIC_CLASSES",
    "AdmissionMiddleware",
    "budgets_from",
    "traffic_class",
]

TRAFFIC_CLASSES = ("intake", "sync", "read", "write")
#: Set in the ASGI scope of a request refused for overload: the traffic class that refused it.
REFUSED_SCOPE_KEY = "brigade.admission_refused"
#: Probes and scrapes must answer exactly when the API is overloaded; long polls are held on
#: purpose (see the module docstring).
_NEVER_LIMITED = frozenset({"/healthz", "/metrics", "/v1/agents/work"})
_AGENT_PATHS = frozenset({"/v1/agents/sync", "/v1/agents/enroll"})
_READ_METHODS = frozenset({"GET", "HEAD"})


def traffic_class(method: str, path: str) -> str | None:
    """The class whose budget a request counts against, or None if it is never limited."""
    path = path.rstrip("/") or "/"
    if path in _NEVER_LIMITED:
        return None
    if method == "POST" and path == "/v1/orders":
        return "intake"
    if path in _AGENT_PATHS:
        return "sync"
    return "read" if method in _READ_METHODS else "write"


def budgets_from(settings: Settings) -> dict[str, ClassBudget]:
    """One budget per traffic class from the ``BRIGADE_ADMISSION_*`` settings."""
    initial = {
        "intake": settings.admission_intake_limit,
        "sync": settings.admission_sync_limit,
        "read": settings.admission_read_limit,
        "write": settings.admission_write_limit,
    }
    floor = {"intake": settings.admission_intake_min_limit}
    return {
        name: ClassBudget(
            initial=float(initial[name]),
            min_limit=float(floor.get(name, settings.admission_min_limit)),
            max_limit=float(settings.admission_max_limit),
            target_latency_s=settings.admission_target_latency_s,
            tolerance=settings.admission_latency_tolerance,
            refusal_hold_s=settings.admission_refusal_hold_s,
        )
        for name in TRAFFIC_CLASSES
    }


class AdmissionMiddleware:
    """Admit or refuse each request by its class's limit; feed back its latency when done."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        budgets: Mapping[str, ClassBudget],
        monotonic: Callable[[], float] = time.monotonic,
        max_held: int = 1024,
    ) -> None:
        """At most ``max_held`` refusals are held at once (see :meth:`_refuse`)."""
        self.app = app
        self.metrics = metrics
        self.monotonic = monotonic
        self.max_held = max_held
        self._held = 0
        self._state = AdmissionState.of(budgets)
        # The app may be served from more than one thread (a test client's portal, several
        # event loops), so every read-modify-write of the state is done under one lock.
        self._lock = threading.Lock()
        for name in budgets:
            metrics.admission_rejected.labels(name)  # exported at 0 before the first refusal
            # Read at scrape time: nothing per request.
            metrics.admission_limit.labels(name).set_function(
                functools.partial(self._read, name, "limit")
            )
            metrics.admission_in_flight.labels(name).set_function(
                functools.partial(self._read, name, "in_flight")
            )
            metrics.admission_latency_ewma.labels(name).set_function(
                functools.partial(self._read, name, "latency_ewma_s")
            )
            metrics.admission_target.labels(name).set_function(
                functools.partial(self._target, name)
            )

    def _read(self, name: str, field: str) -> float:
        return float(getattr(self.state.classes[name], field))

    def _target(self, name: str) -> float:
        return self.state.classes[name].target_s(self.monotonic())

    @property
    def state(self) -> AdmissionState:
        """The limits and requests in flight now, per class."""
        with self._lock:
            return self._state

    @property
    def held_refusals(self) -> int:
        """Refusals waiting out their hold now."""
        with self._lock:
            return self._held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = traffic_class(str(scope.get("method", "")), str(scope.get("path", "")))
        if name is None:
            await self.app(scope, receive, send)
            return
        with self._lock:
            self._state, admission = acquire(self._state, name, self.monotonic())
        if not admission.admitted:
            self.metrics.admission_rejected.labels(name).inc()
            scope[REFUSED_SCOPE_KEY] = name  # the access log samples refusals (observability)
            await self._refuse(send, name, admission)
            return
        started = self.monotonic()
        status = 500  # an app that raises before answering counts as failed

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            status = 500
            raise
        finally:
            now = self.monotonic()
            with self._lock:
                self._state = release(
                    self._state, name, now, latency_s=now - started, ok=status < 500
                )

    async def _refuse(self, send: Send, name: str, admission: Admission) -> None:
        """Answer ``503`` after holding the refusal its class's ``refusal_hold_s``.

        A refusal answered at once invites an immediate retry from a client that ignores
        ``Retry-After``; a few such clients in a loop make refusals most of the server's work
        and starve the requests it admitted (64 closed-loop workers did: 12,000 refusals in
        8 s, accepted orders down from ~600/s to ~60/s). Held, each such client retries at
        most once per hold, for the price of a timer. At most ``max_held`` are held at once,
        so a flood cannot pile up connections; beyond that they are answered at once.
        """
        with self._lock:
            hold_s = self._state.classes[name].budget.refusal_hold_s
            hold = hold_s > 0 and self._held < self.max_held
            self._held += hold
        if hold:
            try:
                await asyncio.sleep(hold_s)
            finally:
                with self._lock:
                    self._held -= 1
        await _overloaded(send, name, admission)


@functools.lru_cache(maxsize=256)
def _refusal(name: str, retry_after: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the ``503`` for a class and a Retry-After, built once: under
    overload refusals are most of the traffic, and each must cost as little as possible."""
    body = encode_problem(
        problem_body(
            503,
            "overloaded",
            "Overloaded",
            f"too many {name} requests in progress; retry after {retry_after} s",
            extra={"traffic_class": name},
        )
    )
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    return headers, body


async def _overloaded(send: Send, name: str, admission: Admission) -> None:
    headers, body = _refusal(name, max(1, admission.retry_after_s or 1))
    # A copy of the list: middlewares outside append their own headers (x-request-id).
    await send({"type": "http.response.start", "status": 503, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})
