"""The operators' API of a real ``brigade serve``: setup, intake, idempotency, access, errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.harness import ControlPlane, run_cli

PROBLEM = "application/problem+json"


def setup_kitchen(
    client: httpx.Client, kitchen_id: str = "k1", *, station: str = "grill", slots: int = 2
) -> None:
    """Create a kitchen with one station."""
    body = {
        "id": kitchen_id,
        "name": f"Kitchen {kitchen_id}",
        "timezone": "UTC",
        "stations": [{"id": station, "name": station.title(), "slots": slots}],
    }
    response = client.post("/v1/kitchens", json=body)
    assert response.status_code == 201, response.text


def setup_sku(
    client: httpx.Client,
    sku_id: str = "burger",
    *,
    station: str = "grill",
    duration_s: float = 300,
    freshness_min: float = 30,
) -> None:
    """Create a one-step oven SKU."""
    body = {
        "id": sku_id,
        "name": sku_id.title(),
        "station_id": station,
        "steps": [
            {
                "name": "cook",
                "equipment_kind": "oven",
                "action": "cook",
                "setpoint_c": 180,
                "duration_s": duration_s,
                "manual": False,
                "min_core_temp_c": 74,
            }
        ],
        "freshness_window_min": freshness_min,
        "priority": "normal",
        "hold": "hot",
    }
    response = client.post("/v1/skus", json=body)
    assert response.status_code == 201, response.text


def order_body(
    sku_id: str = "burger", *, promised_in_s: float = 1500, transport_min: float = 10
) -> dict[str, Any]:
    # Within the burger's 30 min freshness window, so it may start now (ASAP planning); just in
    # time (10 min transport, p90 375 s) it starts ~525 s from now, inside the lease horizon.
    promised_by = datetime.now(UTC) + timedelta(seconds=promised_in_s)
    return {
        "items": [{"sku_id": sku_id, "quantity": 2}],
        "promised_by": promised_by.isoformat(),
        "destination": "store-1",
        "transport_min": transport_min,
        "priority": "normal",
    }


def place_order(
    client: httpx.Client, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return client.post(
        "/v1/orders", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())}
    )


@contextmanager
def ready_kitchen(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    """An admin client of a control plane with kitchen ``k1`` (station grill) and SKU burger."""
    with control_plane.client() as client:
        setup_kitchen(client)
        setup_sku(client)
        yield client


def token_for(control_plane: ControlPlane, role: str) -> str:
    return run_cli(
        "brigade", "tokens", "create", "--db", str(control_plane.db_path), "--role", role
    ).strip()


def test_kitchen_and_sku_are_readable_after_setup(control_plane: ControlPlane) -> None:
    """A created kitchen, its equipment and a SKU read back as created."""
    with ready_kitchen(control_plane) as client:
        equipment = client.post(
            "/v1/kitchens/k1/equipment",
            json={"id": "oven-1", "kind": "oven", "station_id": "grill"},
        )
        assert equipment.status_code == 201
        kitchen = client.get("/v1/kitchens/k1").json()
        sku = client.get("/v1/skus/burger").json()
    assert kitchen["stations"] == [{"id": "grill", "name": "Grill", "slots": 2}]
    assert kitchen["equipment"][0]["id"] == "oven-1"
    assert sku["steps"][0]["setpoint_c"] == 180


def test_duplicate_kitchen_is_a_conflict(control_plane: ControlPlane) -> None:
    """Creating a kitchen twice answers 409 problem+json."""
    with ready_kitchen(control_plane) as client:
        response = client.post(
            "/v1/kitchens",
            json={"id": "k1", "name": "again", "stations": [{"id": "grill", "name": "G"}]},
        )
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/conflict")


def test_order_is_accepted_with_kitchen_and_predicted_ready_time(
    control_plane: ControlPlane,
) -> None:
    """A feasible order gets 201 with its kitchen, a predicted ready time and planned tasks."""
    with ready_kitchen(control_plane) as client:
        response = place_order(client, order_body())
        assert response.status_code == 201, response.text
        order = response.json()
        fetched = client.get(f"/v1/orders/{order['id']}").json()
    assert order["kitchen_id"] == "k1"
    predicted = datetime.fromisoformat(order["predicted_ready_at"])
    assert predicted <= datetime.fromisoformat(order["promised_by"]) - timedelta(minutes=10)
    assert [(t["sku_id"], t["quantity"], t["state"]) for t in order["tasks"]] == [
        ("burger", 2, "planned")
    ]
    assert fetched == order


def test_unknown_sku_is_rejected_and_recorded(control_plane: ControlPlane) -> None:
    """An order for a SKU nobody knows is 422 ``sku_unknown`` and listed as rejected."""
    with ready_kitchen(control_plane) as client:
        response = place_order(client, order_body("caviar"))
        rejected = client.get("/v1/orders", params={"status": "rejected"}).json()["orders"]
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://brigade.example/problems/order-rejected"
    assert problem["reason"] == "sku_unknown"
    assert [o["id"] for o in rejected] == [problem["order_id"]]


def test_sku_without_a_station_anywhere_is_not_offered(control_plane: ControlPlane) -> None:
    """A SKU whose station no active kitchen has is rejected ``sku_not_offered``."""
    with ready_kitchen(control_plane) as client:
        setup_sku(client, "fries", station="fryer")
        response = place_order(client, order_body("fries"))
    assert response.json()["reason"] == "sku_not_offered"


def test_paused_kitchen_gets_no_orders(control_plane: ControlPlane) -> None:
    """Once the only kitchen is paused, orders are rejected instead of planned there."""
    with ready_kitchen(control_plane) as client:
        paused = client.put("/v1/kitchens/k1/status", json={"status": "paused"})
        assert paused.status_code == 200
        response = place_order(client, order_body())
    assert response.status_code == 422
    assert response.json()["reason"] == "sku_not_offered"


def test_impossible_deadline_is_rejected_at_intake(control_plane: ControlPlane) -> None:
    """A promise earlier than prep plus transport allows is 422 ``deadline_infeasible``."""
    with ready_kitchen(control_plane) as client:
        response = place_order(client, order_body(promised_in_s=600, transport_min=10))
    assert response.json()["reason"] == "deadline_infeasible"


def test_transport_longer_than_freshness_window_is_rejected(control_plane: ControlPlane) -> None:
    """Transport beyond the SKU's freshness window is 422 ``freshness_infeasible``."""
    with ready_kitchen(control_plane) as client:
        response = place_order(client, order_body(promised_in_s=7200, transport_min=45))
    assert response.json()["reason"] == "freshness_infeasible"


def test_same_key_and_body_replays_the_stored_answer(control_plane: ControlPlane) -> None:
    """A retry with the same key and body gets the same status and byte-identical body."""
    with ready_kitchen(control_plane) as client:
        body = order_body()
        first = place_order(client, body, key="retry-1")
        # Same JSON, different key order and spacing: the canonical body is the same.
        second = client.post(
            "/v1/orders",
            content=json.dumps(dict(reversed(list(body.items()))), indent=2),
            headers={"Idempotency-Key": "retry-1", "Content-Type": "application/json"},
        )
        orders = client.get("/v1/orders").json()["orders"]
    assert (second.status_code, second.content) == (first.status_code, first.content)
    assert second.headers["idempotent-replayed"] == "true"
    assert len(orders) == 1


def test_rejection_is_replayed_too(control_plane: ControlPlane) -> None:
    """A rejected order's answer is stored and replayed like an accepted one."""
    with ready_kitchen(control_plane) as client:
        body = order_body("caviar")
        first = place_order(client, body, key="reject-1")
        second = place_order(client, body, key="reject-1")
    assert second.status_code == 422
    assert second.json() == first.json()


def test_same_key_with_a_different_body_is_refused(control_plane: ControlPlane) -> None:
    """Reusing a key for a different order is 422 idempotency-key-reuse."""
    with ready_kitchen(control_plane) as client:
        place_order(client, order_body(), key="k-reuse")
        response = place_order(client, order_body(promised_in_s=7200), key="k-reuse")
    assert response.status_code == 422
    assert response.json()["type"].endswith("/idempotency-key-reuse")


def test_idempotency_keys_are_each_operators_own(control_plane: ControlPlane) -> None:
    """Two operators' clients both use key "order-1001" with different orders: each gets its
    own order (no 422 reuse, no replay of the other's answer); each one's retry replays its own."""
    with ready_kitchen(control_plane) as admin:
        tokens = {
            name: admin.post("/v1/api-tokens", json={"role": "operator", "name": name}).json()[
                "token"
            ]
            for name in ("dispatch", "kiosk")
        }
    bodies = {"dispatch": order_body(), "kiosk": order_body(promised_in_s=7200)}
    first, retry = {}, {}
    for name, token in tokens.items():
        with control_plane.client(token) as client:
            first[name] = place_order(client, bodies[name], key="order-1001")
    for name, token in tokens.items():
        with control_plane.client(token) as client:
            retry[name] = place_order(client, bodies[name], key="order-1001")
    assert [r.status_code for r in first.values()] == [201, 201]
    assert first["dispatch"].json()["id"] != first["kiosk"].json()["id"]
    for name in tokens:
        assert (retry[name].status_code, retry[name].content) == (201, first[name].content)
        assert retry[name].headers["idempotent-replayed"] == "true"


def test_order_without_idempotency_key_is_a_bad_request(control_plane: ControlPlane) -> None:
    """No Idempotency-Key header: 400 with a message saying what to send."""
    with ready_kitchen(control_plane) as client:
        response = client.post("/v1/orders", json=order_body())
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/idempotency-key-missing")
    assert "Idempotency-Key" in response.json()["detail"]


def test_concurrent_requests_with_one_key_make_exactly_one_order(
    control_plane: ControlPlane,
) -> None:
    """Sixteen simultaneous requests with one key: one order; others 409 or the replay."""
    with ready_kitchen(control_plane) as client:
        body = order_body()

        def post(_: int) -> httpx.Response:
            with control_plane.client() as own:
                return place_order(own, body, key="same-key")

        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(post, range(16)))
        orders = client.get("/v1/orders").json()["orders"]
    assert len(orders) == 1
    created = [r for r in responses if r.status_code == 201]
    assert {r.json()["id"] for r in created} == {orders[0]["id"]}
    assert {r.status_code for r in responses} <= {201, 409}
    for response in responses:
        if response.status_code == 409:
            assert response.json()["type"].endswith("/idempotency-key-in-flight")


def test_missing_and_unknown_tokens_are_unauthorized(control_plane: ControlPlane) -> None:
    """No token or an unknown token: 401 problem+json with a Bearer challenge."""
    anonymous = httpx.get(f"{control_plane.url}/v1/orders", timeout=5)
    with control_plane.client(token="brg_not-a-real-token") as client:
        unknown = client.get("/v1/orders")
    for response in (anonymous, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["type"].endswith("/unauthorized")


def test_roles_limit_what_a_token_may_do(control_plane: ControlPlane) -> None:
    """A viewer may read but not order; an operator may order but not create kitchens."""
    with ready_kitchen(control_plane):
        pass
    with control_plane.client(token_for(control_plane, "viewer")) as viewer:
        assert viewer.get("/v1/orders").status_code == 200
        refused = place_order(viewer, order_body())
    with control_plane.client(token_for(control_plane, "operator")) as operator:
        assert place_order(operator, order_body()).status_code == 201
        kitchen = operator.post(
            "/v1/kitchens", json={"id": "k9", "name": "K9", "stations": [{"id": "a", "name": "A"}]}
        )
    assert refused.status_code == 403
    assert kitchen.status_code == 403
    assert "admin" in kitchen.json()["detail"]


def test_invalid_body_is_a_validation_problem(control_plane: ControlPlane) -> None:
    """A malformed order is 422 problem+json naming the bad field."""
    with ready_kitchen(control_plane) as client:
        body = order_body() | {"items": [{"sku_id": "burger", "quantity": 0}]}
        response = place_order(client, body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert "quantity" in problem["detail"]


def test_unknown_route_and_unknown_order_are_not_found(control_plane: ControlPlane) -> None:
    """404s are problem+json too."""
    with control_plane.client() as client:
        for path in ("/v1/nowhere", "/v1/orders/ord-missing"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"] == PROBLEM


def test_oversized_body_is_refused(control_plane: ControlPlane) -> None:
    """A body over the 1 MiB bound is 413 problem+json."""
    with control_plane.client() as client:
        response = client.post(
            "/v1/kitchens",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")


def test_oversized_chunked_body_is_refused(control_plane: ControlPlane) -> None:
    """A chunked upload without Content-Length is cut off at the bound with 413 too."""

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    with control_plane.client() as client:
        response = client.post(
            "/v1/kitchens", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


def test_request_id_is_echoed_or_generated(control_plane: ControlPlane) -> None:
    """X-Request-ID comes back as sent, or a fresh one when none was sent."""
    with control_plane.client() as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": "req-42"})
        generated = client.get("/healthz")
    assert echoed.headers["x-request-id"] == "req-42"
    assert len(generated.headers["x-request-id"]) == 32


def test_metrics_count_orders_by_outcome_and_reason(control_plane: ControlPlane) -> None:
    """/metrics exposes order outcomes and per-route latency."""
    with ready_kitchen(control_plane) as client:
        place_order(client, order_body())
        place_order(client, order_body("caviar"))
        text = client.get("/metrics").text
    assert 'brigade_orders_total{outcome="accepted",reason=""} 1.0' in text
    assert 'brigade_orders_total{outcome="rejected",reason="sku_unknown"} 1.0' in text
    assert 'route="/v1/orders"' in text


def test_stats_count_orders_per_kitchen(control_plane: ControlPlane) -> None:
    """/v1/stats counts orders by status overall and per kitchen, and tasks by state."""
    with ready_kitchen(control_plane) as client:
        place_order(client, order_body())
        stats = client.get("/v1/stats").json()
    assert stats["orders_by_status"] == {"planned": 1}
    assert stats["kitchens"]["k1"]["planned"] == 1
    assert stats["tasks_by_state"] == {"planned": 1}


def test_sigterm_stops_the_server_cleanly(control_plane: ControlPlane) -> None:
    """SIGTERM drains and exits 0."""
    assert control_plane.process.stop() == 0


def test_accepted_order_survives_a_crash_and_its_retry_replays(
    control_plane: ControlPlane,
) -> None:
    """After SIGKILL and restart, a retry of an answered order gets the same answer."""
    with ready_kitchen(control_plane) as client:
        body = order_body()
        first = place_order(client, body, key="before-crash")
    control_plane.kill()
    control_plane.start()
    with control_plane.client() as client:
        retry = place_order(client, body, key="before-crash")
        orders = client.get("/v1/orders").json()["orders"]
    assert (retry.status_code, retry.content) == (201, first.content)
    assert len(orders) == 1
