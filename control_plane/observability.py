"""JSON logs with a request id, and the ASGI middleware that bounds bodies, times requests and
tags every answer with ``X-Request-ID``."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.admission_middleware import REFUSED_SCOPE_KEY
from control_plane.errors import PayloadTooLarge
from control_plane.metrics import Metrics
from control_plane.problem_json import encode_problem, error_problem

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = logging.getLogger("brigade.http")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RefusalLogSampler:
    """At most one access-log line per traffic class and ``interval_s`` for overload refusals.

    Under overload refusals are most of the traffic (thousands a second at five times what the
    server can take), and a JSON line for each would add to the overload and flood the log
    with identical lines. The first refusal of an interval is logged, with how many of its
    class went unlogged since the previous line (``suppressed_refusals``); every refusal is
    still counted in ``brigade_admission_rejected_total`` and timed in the histograms.

    >>> sampler = RefusalLogSampler(interval_s=1.0)
    >>> [sampler.take("intake", now) for now in (0.0, 0.2, 0.5, 1.1, 1.2)]
    [0, None, None, 2, None]
    """

    def __init__(self, *, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._logged_at: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def take(self, traffic_class: str, now: float) -> int | None:
        """How many refusals went unlogged before this one if it is to be logged, else None."""
        with self._lock:
            last = self._logged_at.get(traffic_class)
            if last is not None and now - last < self.interval_s:
                self._suppressed[traffic_class] = self._suppressed.get(traffic_class, 0) + 1
                return None
            self._logged_at[traffic_class] = now
            return self._suppressed.pop(traffic_class, 0)


class RequestMiddleware:
    """Request id, body size bound (413), latency histogram per route template, access log
    (refusals for overload sampled: :class:`RefusalLogSampler`)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        refusal_log: RefusalLogSampler | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.refusal_log = refusal_log or RefusalLogSampler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send_with_id)
                return
            body = await self._bounded_body(receive)
            if body is None:
                await self._too_large(send_with_id)
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.request_seconds.labels(method, template).observe(elapsed)
            self.metrics.responses.labels(method, template, str(status_holder[0])).inc()
            fields: dict[str, Any] = {
                "method": method,
                "path": scope.get("path"),
                "route": template,
                "status": status_holder[0],
                "duration_ms": round(elapsed * 1000, 2),
            }
            refused = scope.get(REFUSED_SCOPE_KEY)
            suppressed = 0 if refused is None else self.refusal_log.take(refused, time.monotonic())
            if suppressed is not None:
                if refused is not None:
                    fields["traffic_class"] = refused
                    fields["suppressed_refusals"] = suppressed
                log.info("request", extra={"fields": fields})
            request_id_var.reset(token)

    async def _bounded_body(self, receive: Receive) -> bytes | None:
        """The whole request body, or None as soon as it exceeds the bound (chunked uploads
        have no Content-Length, so the bound is enforced while reading)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        body = encode_problem(
            error_problem(PayloadTooLarge(f"request body exceeds {self.max_body_bytes} bytes"))
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read body, then the real channel."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
