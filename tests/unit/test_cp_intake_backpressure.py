"""Intake under the control loop's published decisions, through the real app (in process):
shed answers 429 + Retry-After without using up the key, throttle refuses low priority with a
later promise, a paused kitchen gets no new work, and orders show their SLA prediction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from control_plane import auth
from control_plane.app import create_app
from control_plane.config import Settings
from control_plane.deps import Services
from control_plane.planning.backpressure import GLOBAL, Actions, Decision
from control_plane.planning.sla import Prediction
from control_plane.store import Store

SHED = "https://brigade.example/problems/orders-shed"
EVERYONE = frozenset({"low", "normal", "high"})


@dataclass
class App:
    app: FastAPI
    token: str

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def publish(self, *decisions: Decision) -> None:
        self.services.planning.publish_decisions({d.scope: d for d in decisions})

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
            async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
                return await client.request(method, path, headers=headers, **kwargs)

        return asyncio.run(main())

    def order(self, *, key: str, priority: str = "normal", hours: float = 2.0) -> httpx.Response:
        body = {
            "items": [{"sku_id": "burger", "quantity": 1}],
            "promised_by": (datetime.now(UTC) + timedelta(hours=hours)).isoformat(),
            "destination": "store-1",
            "transport_min": 10,
            "priority": priority,
        }
        return self.call("POST", "/v1/orders", json=body, headers={"Idempotency-Key": key})


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[App]:
    """The app over a temp store: kitchens k1 and k2 (a grill of 8 slots each), SKU burger."""
    settings = Settings(db_path=tmp_path / "cp.db")
    store = Store.open(settings.db_path)
    token = auth.create_api_token(store, role="admin", name="test", now=0.0)
    app = App(create_app(settings, store=store), token)
    for kitchen_id in ("k1", "k2"):
        created = app.call(
            "POST",
            "/v1/kitchens",
            json={
                "id": kitchen_id,
                "name": kitchen_id,
                "stations": [{"id": "grill", "name": "G", "slots": 8}],
            },
        )
        assert created.status_code == 201
    sku = {
        "id": "burger",
        "name": "Burger",
        "station_id": "grill",
        "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": 300}],
        "freshness_window_min": 30,
    }
    assert app.call("POST", "/v1/skus", json=sku).status_code == 201
    try:
        yield app
    finally:
        store.close()


def decision(scope: str, level: str, actions: Actions) -> Decision:
    return Decision(scope, level, actions, f"{level} for the test", changed=True)


def test_shed_answers_429_with_retry_after_and_leaves_the_key_unused(cp: App) -> None:
    """Under a global shed the order is 429 ``orders-shed`` with Retry-After, nothing is
    recorded, and the same key is accepted once the shed is over."""
    cp.publish(decision(GLOBAL, "shed", Actions(EVERYONE, 0.0, 45)))
    shed = cp.order(key="k-shed")
    listed = cp.call("GET", "/v1/orders").json()["orders"]
    cp.publish(decision(GLOBAL, "normal", Actions()))
    retried = cp.order(key="k-shed")
    assert shed.status_code == 429
    assert shed.headers["retry-after"] == "45"
    assert shed.headers["content-type"] == "application/problem+json"
    assert (shed.json()["type"], shed.json()["reason"]) == (SHED, "backpressure_shed")
    assert listed == []
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers


def test_throttle_refuses_low_priority_with_a_later_promise(cp: App) -> None:
    """In throttle a low-priority order is 422 ``backpressure_throttle`` offering a promise
    15 minutes later, recorded as rejected; a normal one is accepted."""
    cp.publish(decision(GLOBAL, "throttle", Actions(frozenset({"low"}), 900.0)))
    low = cp.order(key="k-low", priority="low")
    normal = cp.order(key="k-normal", priority="normal")
    problem = low.json()
    order = cp.call("GET", f"/v1/orders/{problem['order_id']}").json()
    offered = datetime.fromisoformat(problem["offered_promised_by"])
    assert (low.status_code, problem["reason"]) == (422, "backpressure_throttle")
    assert offered - datetime.fromisoformat(order["promised_by"]) == timedelta(minutes=15)
    assert (order["status"], order["reason"]) == ("rejected", "backpressure_throttle")
    assert normal.status_code == 201, normal.text


def test_a_kitchen_paused_by_backpressure_gets_no_new_work(cp: App) -> None:
    """With k1 paused by backpressure every order goes to k2; with both paused, 429."""
    paused = Actions(EVERYONE, 0.0, 60, accept_new_work=False)
    cp.publish(decision("k1", "pause", paused))
    kitchens = {cp.order(key=f"k-{n}").json()["kitchen_id"] for n in range(4)}
    cp.publish(decision("k1", "pause", paused), decision("k2", "pause", paused))
    both = cp.order(key="k-both")
    assert kitchens == {"k2"}
    assert (both.status_code, both.json()["reason"]) == (429, "backpressure_pause")


def test_rejections_are_counted_by_reason(cp: App) -> None:
    """The orders metric counts shed and throttled orders under their reasons."""
    cp.publish(decision(GLOBAL, "shed", Actions(EVERYONE, 0.0, 5)))
    cp.order(key="k-1")
    cp.publish(decision(GLOBAL, "throttle", Actions(frozenset({"low"}), 900.0)))
    cp.order(key="k-2", priority="low")
    scrape = cp.call("GET", "/metrics").text
    assert 'brigade_orders_total{outcome="rejected",reason="backpressure_shed"} 1.0' in scrape
    assert 'brigade_orders_total{outcome="rejected",reason="backpressure_throttle"} 1.0' in scrape


def test_order_shows_its_sla_prediction_and_risk(cp: App) -> None:
    """Once the control loop predicts an order, GET and list show the prediction; at_risk
    follows a negative margin. Before that it is null."""
    order_id = cp.order(key="k-1").json()["id"]
    before = cp.call("GET", f"/v1/orders/{order_id}").json()["prediction"]
    ready = datetime(2030, 1, 1, 12, 0, tzinfo=UTC).timestamp()
    cp.services.planning.publish_predictions(
        {order_id: Prediction(order_id, ready, ready + 120, ready + 600, -30.0, 0.7, "queue")}
    )
    after = cp.call("GET", f"/v1/orders/{order_id}").json()["prediction"]
    listed = cp.call("GET", "/v1/orders").json()["orders"][0]["prediction"]
    assert before is None
    assert after == {
        "ready_p50": "2030-01-01T12:00:00.000000+00:00",
        "ready_p90": "2030-01-01T12:02:00.000000+00:00",
        "handover_at": "2030-01-01T12:10:00.000000+00:00",
        "margin_s": -30.0,
        "miss_probability": 0.7,
        "at_risk": True,
        "cause": "queue",
    }
    assert listed == after


def test_stock_is_read_by_viewers_and_delivered_by_operators(cp: App) -> None:
    """A delivery creates the stock line (audited); GET shows it."""
    delivered = cp.call(
        "POST",
        "/v1/kitchens/k1/stock/deliveries",
        json={"lines": [{"ingredient": "patty", "quantity": 12, "low_water_mark": 4}]},
    )
    read = cp.call("GET", "/v1/kitchens/k1/stock").json()
    trail = cp.call("GET", "/v1/audit", params={"action": "stock.delivered"}).json()
    assert delivered.status_code == 200, delivered.text
    assert read == delivered.json()
    assert [(i["ingredient"], i["quantity"], i["low"]) for i in read["items"]] == [
        ("patty", 12.0, False)
    ]
    assert len(trail["records"]) == 1


def test_stock_of_an_unknown_kitchen_is_404(cp: App) -> None:
    """Stock of a kitchen that does not exist is a 404 problem, for reads and deliveries."""
    read = cp.call("GET", "/v1/kitchens/nope/stock")
    delivered = cp.call(
        "POST",
        "/v1/kitchens/nope/stock/deliveries",
        json={"lines": [{"ingredient": "x", "quantity": 1}]},
    )
    assert (read.status_code, delivered.status_code) == (404, 404)


SHED_K = Actions(EVERYONE, 0.0, 30)  # shed: Retry-After, still "accepting" in the decision


def test_a_shedding_kitchen_gets_no_order_another_kitchen_admitted(cp: App) -> None:
    """Global normal, k1 shed, k2 normal: the order is admitted (k2 has headroom) and
    planned at k2, never at the shedding k1 (nor at a k1 throttling its priority)."""
    cp.publish(
        decision(GLOBAL, "normal", Actions()),
        decision("k1", "shed", SHED_K),
        decision("k2", "normal", Actions()),
    )
    shed = {cp.order(key=f"k-shed-{n}").json()["kitchen_id"] for n in range(3)}
    cp.publish(
        decision(GLOBAL, "normal", Actions()),
        decision("k1", "throttle", Actions(frozenset({"low"}), 900.0)),
        decision("k2", "normal", Actions()),
    )
    throttled = {cp.order(key=f"k-low-{n}", priority="low").json()["kitchen_id"] for n in range(3)}
    assert shed == {"k2"}
    assert throttled == {"k2"}


def test_a_shedding_only_kitchen_answers_429(cp: App) -> None:
    """When the only kitchen offering the SKU sheds, the order is 429 with Retry-After."""
    created = cp.call(
        "POST",
        "/v1/kitchens",
        json={"id": "k3", "name": "k3", "stations": [{"id": "fryer", "name": "F", "slots": 2}]},
    )
    assert created.status_code == 201
    sku = {
        "id": "fries",
        "name": "Fries",
        "station_id": "fryer",
        "steps": [{"name": "fry", "equipment_kind": "fryer", "duration_s": 200}],
        "freshness_window_min": 30,
    }
    assert cp.call("POST", "/v1/skus", json=sku).status_code == 201
    cp.publish(decision(GLOBAL, "normal", Actions()), decision("k3", "shed", SHED_K))
    body = {
        "items": [{"sku_id": "fries", "quantity": 1}],
        "promised_by": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        "destination": "store-1",
        "transport_min": 10,
    }
    answer = cp.call("POST", "/v1/orders", json=body, headers={"Idempotency-Key": "k-fries"})
    assert answer.status_code == 429, answer.text
    assert answer.headers["retry-after"] == "30"
    assert answer.json()["reason"] == "backpressure_shed"


def test_shed_is_decided_outside_the_writer_and_logged(
    cp: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A shed request never enters the single write path (``Store.submit``) and leaves a
    structured ``order.shed`` log line with its reason, rate-limited (no durable write)."""
    from control_plane import intake

    monkeypatch.setattr(intake, "SHED_LOG", intake._ShedLog(interval_s=3600.0))
    submitted: list[object] = []
    real_submit = cp.services.store.submit

    def counting_submit(fn: Any) -> Any:
        submitted.append(fn)
        return real_submit(fn)

    monkeypatch.setattr(cp.services.store, "submit", counting_submit)
    cp.publish(decision(GLOBAL, "shed", Actions(EVERYONE, 0.0, 45)))
    with caplog.at_level("WARNING", logger="brigade.intake"):
        answers = [cp.order(key=f"k-{n}").status_code for n in range(3)]
    lines = [r for r in caplog.records if getattr(r, "event", None) == "order.shed"]
    assert answers == [429, 429, 429]
    assert submitted == []
    assert len(lines) == 1
    assert getattr(lines[0], "reason", None) == "backpressure_shed"
