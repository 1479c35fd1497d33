"""SPEC guarantee 1 under crashes: ``kill -9`` of ``brigade serve`` in the middle of intake.

``BRIGADE_CHAOS_COUNT`` sets the number of kill/restart rounds (``make chaos`` runs many).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import chaos_count, soak_timeout
from tests.harness import ControlPlane, wait_until
from tests.integration.test_cp_api import order_body, setup_kitchen, setup_sku

CLIENTS = 6


@dataclass
class Ledger:
    """What the clients saw: answers by key, and keys whose request got no answer."""

    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self) -> int:
        with self.lock:
            return len(self.answers)


def keep_ordering(
    url: str, token: str, body: dict[str, Any], ledger: Ledger, stop: threading.Event
) -> None:
    """One client placing orders with fresh keys until told to stop."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        while not stop.is_set():
            key = f"crash-{uuid.uuid4()}"
            try:
                response = http.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                with ledger.lock:
                    ledger.unanswered.add(key)
                continue
            with ledger.lock:
                ledger.answers[key] = (response.status_code, response.content)


@pytest.fixture
def kitchen_cp(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """Kitchen k1 (64 slots) and a burger that keeps a day: every order of the run (all with
    the same promise, planned just in time) finds a slot, so each one is accepted."""
    with control_plane.client() as client:
        setup_kitchen(client, slots=64)
        setup_sku(client, freshness_min=24 * 60)
        yield control_plane


@pytest.mark.soak
@pytest.mark.timeout(soak_timeout(default=5, per_trial_s=15))
def test_kill_9_during_intake_loses_no_answered_order_and_duplicates_none(
    kitchen_cp: ControlPlane,
) -> None:
    """After each SIGKILL mid-intake and a restart: every 201 replays byte for byte, every
    request that got no answer yields exactly one order on retry, nothing else exists."""
    server, ledger, rng = kitchen_cp, Ledger(), random.Random(4)
    body = order_body(promised_in_s=3 * 24 * 3600, transport_min=10)
    for _ in range(chaos_count(5)):
        stop = threading.Event()
        target = ledger.answered() + rng.randint(3, 30)
        with ThreadPoolExecutor(CLIENTS) as pool:
            for _ in range(CLIENTS):
                pool.submit(keep_ordering, server.url, server.admin_token, body, ledger, stop)
            try:
                wait_until(
                    lambda target=target: ledger.answered() >= target,  # type: ignore[misc]
                    timeout=30,
                    what="answers",
                )
                server.kill()
            finally:
                stop.set()
        server.start()
    assert all(status == 201 for status, _ in ledger.answers.values())
    with server.client(timeout=30) as http:
        for key, (status, content) in ledger.answers.items():
            retry = http.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
            assert (retry.status_code, retry.content) == (status, content)
        retried = {}
        for key in ledger.unanswered:
            retry = http.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
            assert retry.status_code == 201, retry.text
            retried[key] = retry.json()["id"]
        again = {
            key: http.post("/v1/orders", json=body, headers={"Idempotency-Key": key}).json()["id"]
            for key in ledger.unanswered
        }
        total = http.get("/v1/stats").json()["orders_by_status"]
    answered_ids = {httpx.Response(201, content=c).json()["id"] for _, c in ledger.answers.values()}
    assert again == retried
    assert ledger.unanswered, "the kills should catch some requests in flight"
    assert sum(total.values()) == len(answered_ids) + len(set(retried.values()))
