"""A shipped fake of the control plane's agent API, for tests of the agent and of tools on it.

:class:`FakeControlPlane` implements ``POST /v1/agents/enroll`` and ``POST /v1/agents/sync``
exactly as :mod:`protocol.sync_api` describes, in memory: it stores events deduplicated by
``seq``, acks the highest contiguous one, asks for a resend on a gap, and hands out the leases
offered to it. Use it in-process as an ``httpx.MockTransport`` (:meth:`transport`) or over real
HTTP on a loopback port (:meth:`serve`) for an agent in a subprocess.

It has no work doorbell (``GET /v1/agents/work`` is 404, as from a control plane older than
it), so an agent against it syncs at its interval, as tests of timing expect.

>>> fake = FakeControlPlane(kitchen_id="k1")
>>> client = httpx.Client(transport=fake.transport(), base_url="http://cp")
>>> client.post("/v1/agents/sync", content=b"{}").status_code
401
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from pydantic import ValidationError

from protocol import (
    EnrollRequest,
    EnrollResponse,
    EventEnvelope,
    Lease,
    SyncRequest,
    SyncResponse,
    encode_message,
)

#: The control plane's work doorbell, which this fake does not have.
WORK_DOORBELL_PATH = "/v1/agents/work"


@dataclass
class FakeControlPlane:
    """In-memory control plane for one kitchen and one agent."""

    kitchen_id: str = "k1"
    agent_id: str = "agent-1"
    credential: str = "fake-credential-0123456789"
    enrollment_tokens: set[str] = field(default_factory=lambda: {"enroll-token-1"})
    #: Events received, by seq (duplicates ignored).
    events: dict[int, EventEnvelope] = field(default_factory=dict)
    #: Every sync request, in arrival order.
    requests: list[SyncRequest] = field(default_factory=list)
    #: When set, every request is answered with this status (and ``Retry-After``).
    fail_status: int | None = None
    retry_after: str = "1"
    #: Monotonic arrival time of every request, answered or refused.
    arrivals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._offered: list[Lease] = []
        self._cancellations: list[dict[str, object]] = []
        self._lost: list[str] = []

    def offer(self, lease: Lease) -> None:
        """Hand ``lease`` to the agent in the next sync that wants leases."""
        with self._lock:
            self._offered.append(lease)

    def cancel(self, task_id: str, fencing_token: int, reason: str = "order_cancelled") -> None:
        with self._lock:
            self._cancellations.append(
                {"task_id": task_id, "fencing_token": fencing_token, "reason": reason}
            )

    def lose(self, task_id: str) -> None:
        """Tell the agent in the next sync that it no longer holds ``task_id``'s lease."""
        with self._lock:
            self._lost.append(task_id)

    def acked_seq(self) -> int:
        """Highest seq such that every event 1..seq has arrived."""
        with self._lock:
            return self._contiguous()

    def event_types(self, task_id: str | None = None) -> list[str]:
        """Types of the received events in seq order, optionally of one task."""
        with self._lock:
            return [
                e.type
                for _, e in sorted(self.events.items())
                if task_id is None or e.payload.get("task_id") == task_id
            ]

    def _contiguous(self) -> int:
        seq = 0
        while seq + 1 in self.events:
            seq += 1
        return seq

    # -- the HTTP surface ------------------------------------------------------------------

    def respond(
        self, path: str, authorization: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: ``(status, headers, body)``."""
        if path == WORK_DOORBELL_PATH:
            # Not counted in ``arrivals``: tests of the sync's pacing count syncs only.
            return 404, {}, _problem(404, f"no route {path}")
        with self._lock:
            self.arrivals.append(time.monotonic())
        if self.fail_status is not None:
            return (
                self.fail_status,
                {"Retry-After": self.retry_after},
                _problem(self.fail_status, "overloaded"),
            )
        try:
            if path == "/v1/agents/enroll":
                return self._enroll(body)
            if path == "/v1/agents/sync":
                if authorization != f"Bearer {self.credential}":
                    return 401, {}, _problem(401, "unknown or revoked agent credential")
                return self._sync(body)
        except (ValidationError, ValueError) as exc:
            return 422, {}, _problem(422, str(exc)[:200])
        return 404, {}, _problem(404, f"no route {path}")

    def _enroll(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = EnrollRequest.model_validate_json(body)
        with self._lock:
            if request.token not in self.enrollment_tokens:
                return 401, {}, _problem(401, "enrollment token is invalid, expired or used")
            self.enrollment_tokens.discard(request.token)
        answer = EnrollResponse(
            agent_id=self.agent_id,
            kitchen_id=self.kitchen_id,
            credential=self.credential,
            server_time=time.time(),
        )
        return 201, {}, encode_message(answer)

    def _sync(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = SyncRequest.model_validate_json(body)
        with self._lock:
            self.requests.append(request)
            for event in request.events:
                self.events.setdefault(event.seq, event)
            acked = self._contiguous()
            gap = any(seq > acked for seq in self.events)
            leases = self._offered[: request.want_leases]
            del self._offered[: len(leases)]
            cancellations, self._cancellations = self._cancellations, []
            lost, self._lost = self._lost, []
        answer = SyncResponse.model_validate(
            {
                "acked_seq": acked,
                "resend_from": acked + 1 if gap else None,
                "server_time": time.time(),
                "leases": [lease.model_dump(mode="json") for lease in leases],
                "cancellations": cancellations,
                "lost_leases": lost,
            }
        )
        return 200, {}, encode_message(answer)

    def transport(self) -> httpx.MockTransport:
        """An in-process transport for ``httpx.Client(transport=...)``."""

        def handler(request: httpx.Request) -> httpx.Response:
            status, headers, body = self.respond(
                request.url.path, request.headers.get("Authorization", ""), request.content
            )
            return httpx.Response(
                status,
                headers={"Content-Type": _content_type(status), **headers},
                content=body,
            )

        return httpx.MockTransport(handler)

    @contextmanager
    def serve(self, host: str = "127.0.0.1") -> Iterator[str]:
        """Serve over HTTP on a free loopback port; yields the base URL; stops on exit."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length))

            def _answer(self, content: bytes) -> None:
                status, headers, body = fake.respond(
                    self.path.partition("?")[0], self.headers.get("Authorization", ""), content
                )
                self.send_response(status)
                self.send_header("Content-Type", _content_type(status))
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read the fake's state, not its access log."""

        server = ThreadingHTTPServer((host, 0), Handler)
        thread = threading.Thread(target=server.serve_forever, name="fake-control-plane")
        thread.start()
        try:
            yield f"http://{host}:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _problem(status: int, detail: str) -> bytes:
    return json.dumps(
        {"type": "about:blank", "title": "error", "status": status, "detail": detail}
    ).encode()


def _content_type(status: int) -> str:
    return "application/json" if status < 400 else "application/problem+json"
