"""``POST /v1/agents/sync`` in-process: the body is parsed straight from its bytes, with the same
answers as before (401 before any parsing, 422 problems), the same documented schema, and the
batch limits in the answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane import auth, catalogue
from control_plane.app import create_app
from control_plane.config import Settings
from control_plane.schemas import KitchenCreate
from control_plane.store import Store
from protocol.sync_api import MAX_SYNC_EVENTS, EnrollRequest

T0 = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db")


@pytest.fixture
def credential(settings: Settings) -> str:
    store = Store.open(settings.db_path)
    try:
        kitchen = {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "Grill"}]}
        catalogue.create_kitchen(store, KitchenCreate.model_validate(kitchen), now=T0, actor="t")
        token, _ = auth.create_enrollment_token(
            store, kitchen_id="k1", ttl_s=3600, now=T0, actor="t"
        )
        request = EnrollRequest(token=token, name="box", agent_version="1")
        return auth.enroll(store, request, now=T0).credential
    finally:
        store.close()


def call(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        store = Store.open(settings.db_path)
        try:
            transport = httpx.ASGITransport(app=create_app(settings, store=store))
            async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
                return await client.request(method, path, **kwargs)
        finally:
            store.close()

    return asyncio.run(main())


def sync_body(agent_id: str = "x", seq: int = 1) -> dict[str, Any]:
    return {
        "heartbeat": {"agent_version": "1", "sent_at": T0, "outbox_depth": 1},
        "events": [
            {
                "agent_id": agent_id,
                "kitchen_id": "k1",
                "seq": seq,
                "event_id": "e-1",
                "type": "readings.summary",
                "occurred_at": T0,
            }
        ],
    }


def test_a_valid_sync_is_answered_with_the_batch_limits(
    settings: Settings, credential: str
) -> None:
    """A sync with no events: 200, acked 0, max_events and max_request_bytes advertised."""
    body = {"heartbeat": {"agent_version": "1", "sent_at": T0, "outbox_depth": 0}}
    answer = call(
        settings,
        "POST",
        "/v1/agents/sync",
        json=body,
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["acked_seq"] == 0
    assert answer.json()["max_events"] == MAX_SYNC_EVENTS
    assert answer.json()["max_request_bytes"] == settings.max_body_bytes


def test_an_invalid_body_is_a_422_problem_naming_the_field(
    settings: Settings, credential: str
) -> None:
    """seq 0 is refused with a validation problem whose errors locate it in the body."""
    answer = call(
        settings,
        "POST",
        "/v1/agents/sync",
        json=sync_body(seq=0),
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"][0]["loc"] == ["body", "events", "0", "seq"]


def test_a_body_that_is_not_json_is_a_422_problem(settings: Settings, credential: str) -> None:
    """Bytes that are not JSON: 422, not a server error."""
    answer = call(
        settings,
        "POST",
        "/v1/agents/sync",
        content=b"{not json",
        headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422


def test_the_credential_is_checked_before_the_body_is_parsed(settings: Settings) -> None:
    """No credential and a malformed body: 401."""
    answer = call(settings, "POST", "/v1/agents/sync", json=sync_body(seq=0))
    assert answer.status_code == 401


def test_the_openapi_document_still_describes_the_sync_body(settings: Settings) -> None:
    """The request body schema is documented, self-contained (no dangling $defs refs)."""
    document = call(settings, "GET", "/openapi.json").json()
    operation = document["paths"]["/v1/agents/sync"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is True
    assert {"heartbeat", "events", "renewals", "want_leases"} <= set(schema["properties"])
    assert schema["properties"]["events"]["maxItems"] == MAX_SYNC_EVENTS
    assert "#/$defs/" not in str(schema)


def test_a_new_app_paces_a_fleet_that_synced_before_it_started(tmp_path: Path) -> None:
    """The stored last syncs of a large fleet seed the pacer of a freshly started app: its
    first answer already carries next_sync_s."""
    settings = Settings(db_path=tmp_path / "cp.db", sync_budget_per_s=10.0)
    credential = "brga_" + "c" * 32
    store = Store.open(settings.db_path)
    try:
        with store.write() as tx:
            tx.insert_kitchen(
                kitchen_id="k1", name="K1", timezone="UTC", location=None, status="active",
                created_at=T0,
            )  # fmt: skip
            for n in range(100):
                tx.insert_agent(
                    agent_id=f"agent-{n}",
                    kitchen_id="k1",
                    name=f"box-{n}",
                    credential_hash=auth.hash_secret(credential + str(n)),
                    agent_version="1",
                    enrolled_at=T0,
                )
                tx.record_heartbeat(
                    agent_id=f"agent-{n}", last_seen_at=time.time() - 5, clock_offset_s=0.0,
                    clock_offset_measured_at=T0, clock_samples=1, agent_version="1",
                    outbox_depth=0, reconnect_json=None,
                )  # fmt: skip
    finally:
        store.close()
    body = {"heartbeat": {"agent_version": "1", "sent_at": time.time(), "outbox_depth": 0}}
    answer = call(
        settings,
        "POST",
        "/v1/agents/sync",
        json=body,
        headers={"Authorization": f"Bearer {credential}0"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_sync_s"] == pytest.approx(10.0)
