"""Access control of a real ``brigade serve``: the whole role x endpoint matrix (SPEC 9).

Every operation of the OpenAPI document is listed in :data:`ENDPOINTS` with the least role it
needs; each is called by each kind of caller. Allowed calls use ids that do not exist (or fresh
ones), so they prove access without changing what the other calls see.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from protocol.base import encode_message
from protocol.events import EventEnvelope, EventType
from protocol.sync_api import EnrollRequest, EnrollResponse, Heartbeat, SyncRequest
from tests.harness import ControlPlane

ROLES = ("viewer", "operator", "admin")
CALLERS = ("anonymous", *ROLES, "agent", "revoked_agent")


@dataclass(frozen=True)
class Endpoint:
    """One operation, the least role it needs, and the status an allowed call gets here."""

    method: str
    path: str
    needs: str  # viewer | operator | admin | agent | public
    allowed: int
    body: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


SYNC_BODY: dict[str, Any] = {"heartbeat": {"agent_version": "1", "sent_at": 0, "outbox_depth": 0}}

ENDPOINTS = (
    Endpoint("GET", "/healthz", "public", 200),
    Endpoint("GET", "/metrics", "public", 200),
    Endpoint("GET", "/v1/kitchens", "viewer", 200),
    Endpoint("POST", "/v1/kitchens", "admin", 201, {"id": "{new}", "name": "N", "stations": [
        {"id": "grill", "name": "Grill"}]}),
    Endpoint("GET", "/v1/kitchens/{kitchen_id}", "viewer", 200),
    Endpoint("PUT", "/v1/kitchens/{kitchen_id}/status", "operator", 200, {"status": "active"}),
    Endpoint("GET", "/v1/kitchens/{kitchen_id}/stations", "viewer", 200),
    Endpoint("POST", "/v1/kitchens/{kitchen_id}/stations", "admin", 201, {"id": "{new}",
        "name": "S"}),
    Endpoint("PATCH", "/v1/kitchens/{kitchen_id}/stations/{station_id}", "admin", 200,
        {"slots": 2}),
    Endpoint("DELETE", "/v1/kitchens/{kitchen_id}/stations/{missing}", "admin", 404),
    Endpoint("GET", "/v1/kitchens/{kitchen_id}/equipment", "viewer", 200),
    Endpoint("POST", "/v1/kitchens/{kitchen_id}/equipment", "admin", 201, {"id": "{new}",
        "kind": "oven", "station_id": "grill"}),
    Endpoint("GET", "/v1/kitchens/{kitchen_id}/equipment/{missing}", "viewer", 404),
    Endpoint("PATCH", "/v1/kitchens/{kitchen_id}/equipment/{missing}", "admin", 404,
        {"station_id": None}),
    Endpoint("DELETE", "/v1/kitchens/{kitchen_id}/equipment/{missing}", "admin", 404),
    Endpoint("GET", "/v1/kitchens/{kitchen_id}/stock", "viewer", 200),
    Endpoint("GET", "/v1/kitchens/{kitchen_id}/haccp", "viewer", 200),
    Endpoint("POST", "/v1/kitchens/{kitchen_id}/stock/deliveries", "operator", 200, {"lines": [
        {"ingredient": "matrix-only", "quantity": 1}]}),
    Endpoint("GET", "/v1/skus", "viewer", 200),
    Endpoint("POST", "/v1/skus", "admin", 201, {"id": "{new}", "name": "S",
        "station_id": "grill", "steps": [{"name": "c", "duration_s": 60}],
        "freshness_window_min": 30}),
    Endpoint("GET", "/v1/skus/{sku_id}", "viewer", 200),
    Endpoint("PUT", "/v1/skus/{missing}", "admin", 404, {"name": "S",
        "steps": [{"name": "c", "duration_s": 60}], "freshness_window_min": 30}),
    Endpoint("GET", "/v1/orders", "viewer", 200),
    Endpoint("POST", "/v1/orders", "operator", 422, {"items": [{"sku_id": "nothing",
        "quantity": 1}], "promised_by": "2030-01-01T00:00:00+00:00", "destination": "s"}),
    Endpoint("GET", "/v1/orders/{order_id}", "viewer", 200),
    Endpoint("POST", "/v1/orders/{missing}/cancel", "operator", 404),
    Endpoint("GET", "/v1/orders/{order_id}/audit", "viewer", 200),
    Endpoint("GET", "/v1/tasks", "viewer", 200),
    Endpoint("GET", "/v1/tasks/{missing}", "viewer", 404),
    Endpoint("POST", "/v1/tasks/{missing}/reassign", "operator", 404, {"reason": "test"}),
    Endpoint("GET", "/v1/alerts", "viewer", 200),
    Endpoint("GET", "/v1/alerts/{missing}/{missing}", "viewer", 404),
    Endpoint("POST", "/v1/alerts/{missing}/{missing}/acknowledge", "operator", 404,
        {"corrective_action": "binned"}),
    Endpoint("GET", "/v1/agents", "viewer", 200),
    Endpoint("GET", "/v1/agents/{agent_id}", "viewer", 200),
    Endpoint("POST", "/v1/agents/{missing}/revoke", "admin", 404),
    Endpoint("POST", "/v1/agents/{missing}/accept-gap", "admin", 404, {"reason": "test"}),
    Endpoint("POST", "/v1/agents/sync", "agent", 200, SYNC_BODY),
    Endpoint("GET", "/v1/agents/work", "agent", 200),
    Endpoint("POST", "/v1/agents/enroll", "public", 401, {"token": "brge_never-issued",
        "name": "box", "agent_version": "1"}),
    Endpoint("GET", "/v1/enrollment-tokens", "admin", 200),
    Endpoint("POST", "/v1/enrollment-tokens", "admin", 201, {"kitchen_id": "k1"}),
    Endpoint("POST", "/v1/api-tokens", "admin", 201, {"role": "viewer", "name": "matrix"}),
    Endpoint("GET", "/v1/audit", "viewer", 200),
    Endpoint("GET", "/v1/audit/verify", "admin", 200),
    Endpoint("GET", "/v1/stats", "viewer", 200),
    Endpoint("GET", "/v1/backpressure", "viewer", 200),
    Endpoint("PUT", "/v1/backpressure/overrides/{missing}", "operator", 404, {"level": "shed",
        "reason": "test"}),
    Endpoint("DELETE", "/v1/backpressure/overrides/{missing}", "operator", 404),
    Endpoint("GET", "/v1/prep-times", "viewer", 200),
)  # fmt: skip


def expected_status(endpoint: Endpoint, caller: str) -> int:
    """What ``caller`` must get from ``endpoint``."""
    if endpoint.needs == "public":
        return endpoint.allowed
    if caller == "anonymous":
        return 401
    if endpoint.needs == "agent":
        # Operator tokens are no agent credentials (401); a revoked agent is known and refused.
        return {"agent": endpoint.allowed, "revoked_agent": 403}.get(caller, 401)
    if caller in ("agent", "revoked_agent"):
        return 403
    return endpoint.allowed if ROLES.index(caller) >= ROLES.index(endpoint.needs) else 403


@dataclass
class World:
    """The shared server and a credential per caller."""

    server: ControlPlane
    credentials: dict[str, str | None]
    ids: dict[str, str]


def _enroll(server: ControlPlane, admin: httpx.Client, name: str) -> EnrollResponse:
    token = admin.post("/v1/enrollment-tokens", json={"kitchen_id": "k1"}).json()["token"]
    request = EnrollRequest(token=token, name=name, agent_version="1")
    response = httpx.post(
        f"{server.url}/v1/agents/enroll",
        content=encode_message(request),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return EnrollResponse.model_validate_json(response.content)


@pytest.fixture(scope="module")
def world(shared_control_plane: ControlPlane) -> Iterator[World]:
    server = shared_control_plane
    with server.client() as admin:
        credentials: dict[str, str | None] = {"anonymous": None, "admin": server.admin_token}
        for role in ("viewer", "operator"):
            minted = admin.post("/v1/api-tokens", json={"role": role, "name": role})
            credentials[role] = minted.json()["token"]
        kitchen = {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "Grill"}]}
        admin.post("/v1/kitchens", json=kitchen).raise_for_status()
        sku = {
            "id": "burger",
            "name": "Burger",
            "station_id": "grill",
            "steps": [{"name": "cook", "duration_s": 60}],
            "freshness_window_min": 30,
        }
        admin.post("/v1/skus", json=sku).raise_for_status()
        order = admin.post(
            "/v1/orders",
            json={
                "items": [{"sku_id": "burger", "quantity": 1}],
                "promised_by": "2099-01-01T00:00:00+00:00",
                "destination": "store-1",
            },
            headers={"Idempotency-Key": "matrix-order"},
        )
        assert order.status_code == 201, order.text
        agent = _enroll(server, admin, "box")
        revoked = _enroll(server, admin, "stolen-box")
        admin.post(f"/v1/agents/{revoked.agent_id}/revoke").raise_for_status()
    credentials["agent"] = agent.credential
    credentials["revoked_agent"] = revoked.credential
    ids = {
        "kitchen_id": "k1",
        "station_id": "grill",
        "sku_id": "burger",
        "order_id": order.json()["id"],
        "agent_id": agent.agent_id,
        "missing": "does-not-exist",
    }
    yield World(server, credentials, ids)


def _fill(value: Any) -> Any:
    """The body with ``{new}`` replaced by a fresh id."""
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v) for v in value]
    if value == "{new}":
        return "n" + uuid.uuid4().hex[:12]
    return value


def call(world: World, endpoint: Endpoint, caller: str) -> httpx.Response:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    token = world.credentials[caller]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = _fill(endpoint.body)
    if endpoint.path == "/v1/agents/sync":
        body = {**body, "heartbeat": {**body["heartbeat"], "sent_at": time.time()}}
    return httpx.request(
        endpoint.method,
        world.server.url + endpoint.path.format(**world.ids),
        json=body,
        headers=headers,
        timeout=10,
    )


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_access_matrix(world: World, endpoint: Endpoint, caller: str) -> None:
    """Each caller gets exactly the status its role allows; refusals are problem+json."""
    response = call(world, endpoint, caller)
    assert response.status_code == expected_status(endpoint, caller), response.text
    if response.status_code in (401, 403):
        assert response.headers["content-type"] == "application/problem+json"


def test_matrix_covers_every_operation(world: World) -> None:
    """No operation of the OpenAPI document escapes the matrix."""
    schema = httpx.get(f"{world.server.url}/openapi.json", timeout=10).json()
    documented = {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    }
    listed = {
        f"{e.method} {e.path.replace('{missing}/{missing}', '{agent_id}/{alert_id}')}"
        for e in ENDPOINTS
    }
    normalised = {
        entry.replace("{missing}", "{" + name + "}")
        for entry in listed
        for name in (
            "station_id",
            "equipment_id",
            "sku_id",
            "order_id",
            "task_id",
            "agent_id",
            "scope",
        )
    } | listed
    assert documented <= normalised, sorted(documented - normalised)


def test_agent_cannot_report_for_another_kitchen(world: World) -> None:
    """An agent's credential acts only for its own kitchen: events for k2 are refused 403."""
    forged = EventEnvelope(
        agent_id=world.ids["agent_id"],
        kitchen_id="k2",
        seq=1,
        event_id=str(uuid.uuid4()),
        type=EventType.DEVICE_STATUS,
        occurred_at=time.time(),
        payload={"device_id": "oven-9", "status": "online"},
    )
    request = SyncRequest(
        heartbeat=Heartbeat(agent_version="1", sent_at=time.time(), outbox_depth=1),
        events=[forged],
    )
    response = httpx.post(
        f"{world.server.url}/v1/agents/sync",
        content=encode_message(request),
        headers={
            "Authorization": f"Bearer {world.credentials['agent']}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )
    assert response.status_code == 403
    assert "kitchen k2" in response.json()["detail"]


def test_enrollment_token_binds_the_agent_to_its_kitchen(world: World) -> None:
    """A token minted for k2 enrolls an agent of k2, whatever the installer intended."""
    with world.server.client() as admin:
        kitchen = {"id": "k2", "name": "K2", "stations": [{"id": "fryer", "name": "Fryer"}]}
        admin.post("/v1/kitchens", json=kitchen)
        token = admin.post("/v1/enrollment-tokens", json={"kitchen_id": "k2"}).json()
        listed = admin.get("/v1/enrollment-tokens", params={"kitchen_id": "k2"}).json()
    request = EnrollRequest(token=token["token"], name="k2-box", agent_version="1")
    enrolled = httpx.post(
        f"{world.server.url}/v1/agents/enroll",
        content=encode_message(request),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert enrolled.json()["kitchen_id"] == "k2"
    assert [t["state"] for t in listed["enrollment_tokens"]] == ["unused"]
    assert listed["enrollment_tokens"][0]["id"] == token["id"]
