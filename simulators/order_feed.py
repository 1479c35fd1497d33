"""Client-side parts of a scenario run: the order feed that plays the demand against the
control plane's API (idempotent retries with the same key), and API helpers.

The feed counts what the client saw (submitted, accepted, rejected by reason, errors) and keeps
the ids of the orders answered ``201``: the invariant checker holds the control plane to them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from simulators.demand import PlannedOrder, TimeCompression
from simulators.scenarios import RunFacts
from simulators.services import ControlPlane, json_object


class OrderFeed(threading.Thread):
    """Posts the compressed demand at its times; retries transport errors with the same key."""

    def __init__(
        self,
        cp: ControlPlane,
        plan: list[tuple[float, PlannedOrder]],
        tc: TimeCompression,
        facts: RunFacts,
        started_at: float,
    ) -> None:
        super().__init__(name="order-feed", daemon=True)
        self.cp, self.plan, self.tc, self.facts = cp, plan, tc, facts
        self.started_at = started_at
        self.accepted_ids: list[str] = []
        self.reasons: Counter[str] = Counter()
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        with self.cp.client(timeout=5.0) as http:
            for offset, order in self.plan:
                wait = self.started_at + offset - time.monotonic()
                if self.halt.wait(max(0.0, wait)):
                    return
                self.submit(http, order)

    def submit(self, http: httpx.Client, order: PlannedOrder) -> None:
        now = datetime.now(UTC)
        promised = now + timedelta(seconds=self.tc.real_seconds(order.promise_min))
        body = {
            "items": [{"sku_id": order.sku_id, "quantity": order.quantity}],
            "promised_by": promised.isoformat(),
            "destination": order.destination,
            "transport_min": round(self.tc.real_seconds(order.transport_min) / 60.0, 4),
            "priority": order.priority,
        }
        with self.lock:
            self.facts.submitted += 1
        # The same key makes every retry safe (a crash after commit replays the stored answer).
        deadline = time.monotonic() + 15.0
        while not self.halt.is_set():
            try:
                response = http.post(
                    "/v1/orders", json=body, headers={"Idempotency-Key": order.key}
                )
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    self._error(f"order {order.key}: {exc!r}")
                    return
                self.halt.wait(0.3)
                continue
            if response.status_code == 201:
                with self.lock:
                    self.facts.accepted += 1
                    self.accepted_ids.append(response.json()["id"])
                return
            problem = json_object(response)
            if response.status_code in (422, 429, 503) and "reason" in problem:
                with self.lock:
                    self.facts.rejected += 1
                    self.reasons[str(problem["reason"])] += 1
                return
            if response.status_code in (409, 502, 503) and time.monotonic() < deadline:
                self.halt.wait(0.3)
                continue
            self._error(f"order {order.key}: HTTP {response.status_code} {response.text[:160]}")
            return

    def _error(self, what: str) -> None:
        with self.lock:
            self.facts.errors.append(what)


def all_pages(http: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list endpoint (``/v1/orders``, ``/v1/tasks``...)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        body = http.get(path, params=params).raise_for_status().json()
        items.extend(body[key])
        cursor = body.get("next_cursor")
        if not cursor:
            return items
