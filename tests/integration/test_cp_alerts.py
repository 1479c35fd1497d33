"""The operators' alert views through the real app (in process) over a real SQLite store: SLA
alerts show their order, cause and resolution; alerts filter by kind and by open/resolved; a
resolution (the condition cleared) is not an acknowledgement (a person's act)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane import alerts, auth, stock
from control_plane.app import create_app
from control_plane.config import Settings
from control_plane.control_loop import ControlLoop
from control_plane.metrics import Metrics
from control_plane.planning_state import PlanningState
from control_plane.schemas import StockDelivery
from control_plane.store import Store, Writer
from tests.fixtures_cp import store_before

T0 = 1_800_000_000.0


@dataclass
class Api:
    """The app (its own control loop not started) and a control loop ticked by hand."""

    store: Store
    loop: ControlLoop
    token: str
    app: Any

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params).json()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            headers = {"Authorization": f"Bearer {self.token}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
                return await client.request(method, path, headers=headers, **kwargs)

        return asyncio.run(main())


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """Kitchen k1 (one grill slot), SKU burger (600 s); order o-first then o-late queued
    behind it, so o-late will miss its promise; and an agent's ``hot_holding`` alert."""
    settings = Settings(db_path=tmp_path / "cp.db", sla_clear_margin_s=60)
    store = Store.open(settings.db_path)
    with store.write() as tx:
        tx.insert_kitchen(
            kitchen_id="k1",
            name="k1",
            timezone="UTC",
            location=None,
            status="active",
            created_at=T0,
        )
        tx.insert_station(kitchen_id="k1", station_id="grill", name="Grill", slots=1)
        tx.insert_sku(
            sku_id="burger",
            name="Burger",
            station_id="grill",
            recipe_steps_json="[]",
            total_duration_s=600.0,
            freshness_window_min=60,
            priority="normal",
            hold="hot",
            created_at=T0,
        )
        add_order(tx, "o-first", "t-a", promised_by=T0 + 1200)
        add_order(tx, "o-late", "t-b", promised_by=T0 + 900)
        tx.insert_alert(
            agent_id="agent-1",
            alert_id="a-1",
            kitchen_id="k1",
            kind="hot_holding",
            severity="warning",
            device_id="cab-1",
            message="hot cabinet at 55 C",
            value=55.0,
            limit_value=63.0,
            raised_at=T0,
        )
    token = auth.create_api_token(store, role="operator", name="chef", now=T0)
    loop = ControlLoop(
        store=store,
        settings=settings,
        metrics=Metrics(),
        planning=PlanningState(),
        clock=lambda: T0,
    )
    try:
        yield Api(store, loop, token, create_app(settings, store=store, clock=lambda: T0))
    finally:
        store.close()


def add_order(tx: Writer, order_id: str, task_id: str, *, promised_by: float) -> None:
    tx.insert_order(
        order_id=order_id,
        idempotency_key=order_id,
        status="planned",
        reason=None,
        kitchen_id="k1",
        promised_by=promised_by,
        destination="store",
        transport_min=0.0,
        priority="normal",
        predicted_ready_at=T0 + 600,
        created_at=T0,
    )
    tx.insert_order_item(order_id=order_id, line=0, sku_id="burger", quantity=1)
    tx.insert_task(
        task_id=task_id,
        kitchen_id="k1",
        station_id="grill",
        sku_id="burger",
        quantity=1,
        duration_s=600.0,
        start_after=T0,
        finish_by=promised_by,
        predicted_ready_at=T0 + 600,
        created_at=T0,
    )
    tx.link_task_order(task_id=task_id, order_id=order_id)


def ids(page: dict[str, Any]) -> list[str]:
    return [alert["alert_id"] for alert in page["alerts"]]


def test_an_sla_alert_shows_its_order_and_cause_while_open(api: Api) -> None:
    """Raised by the loop: listed under ``kind=sla_at_risk&resolved=false`` with its order and
    cause, not resolved and not acknowledged; the agent's alert is not of that kind."""
    assert api.loop.tick().sla_raised == 1
    (alert,) = api.get("/v1/alerts", kind="sla_at_risk", resolved="false")["alerts"]
    assert (alert["agent_id"], alert["order_id"], alert["cause"]) == (
        "control-plane",
        "o-late",
        "queue",
    )
    assert alert["resolved_at"] is alert["resolution"] is alert["acknowledged_at"] is None
    assert ids(api.get("/v1/alerts", kind="hot_holding")) == ["a-1"]
    assert api.get("/v1/alerts", kind="sla_at_risk", resolved="true")["alerts"] == []
    detail = api.get(f"/v1/alerts/control-plane/{alert['alert_id']}")
    assert detail == alert


def test_a_resolved_sla_alert_is_not_shown_as_acknowledged(api: Api) -> None:
    """The queue clears: the alert is resolved (when, how) but nobody acknowledged it, so it
    still lists under ``acknowledged=false``; an operator's acknowledgement keeps the
    resolution and names the operator."""
    api.loop.tick()
    with api.store.write() as tx:
        tx.cancel_task(task_id="t-a", reason="order_cancelled", at=T0)
    assert api.loop.tick().sla_cleared == 1
    (resolved,) = api.get("/v1/alerts", kind="sla_at_risk", resolved="true")["alerts"]
    unacknowledged = api.get("/v1/alerts", acknowledged="false")
    path = f"/v1/alerts/control-plane/{resolved['alert_id']}"
    acknowledged = api.call(
        "POST", f"{path}/acknowledge", json={"corrective_action": "called the customer"}
    ).json()
    assert resolved["resolved_at"] is not None and "o-late" in resolved["resolution"]
    assert resolved["acknowledged_at"] is resolved["acknowledged_by"] is None
    assert sorted(ids(unacknowledged)) == sorted(["a-1", resolved["alert_id"]])
    assert ids(api.get("/v1/alerts", resolved="false")) == ["a-1"]
    assert (acknowledged["acknowledged_by"], acknowledged["corrective_action"]) == (
        "chef",
        "called the customer",
    )
    assert acknowledged["resolution"] == resolved["resolution"]


def test_an_unknown_alert_is_not_found(api: Api) -> None:
    """The detail of an alert that does not exist is a 404 problem."""
    answer = api.call("GET", "/v1/alerts/control-plane/nope")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_alerts_the_loop_resolved_before_0008_lose_their_system_acknowledgement(
    tmp_path: Path,
) -> None:
    """Stored at 0007 as acknowledged by ``control-loop``: after 0008 it is unacknowledged,
    its resolution kept; a person's acknowledgement is left as it was."""
    path = tmp_path / "old.db"
    conn = store_before(path, "0008_reservations_follow_moves_and_alert_resolution")
    conn.executemany(
        "INSERT INTO alerts (agent_id, alert_id, kitchen_id, kind, severity, message, raised_at,"
        " resolved_at, acknowledged_at, acknowledged_by, corrective_action)"
        " VALUES ('control-plane', ?, 'k1', 'sla_at_risk', 'warning', 'm', ?, ?, ?, ?, ?)",
        [
            ("by-loop", T0, T0 + 60, T0 + 60, "control-loop", "recovered"),
            ("by-chef", T0, T0 + 60, T0 + 30, "chef", "rushed it"),
        ],
    )
    conn.close()
    store = Store.open(path)
    try:
        with store.read() as reader:
            rows = {
                row["alert_id"]: (
                    row["acknowledged_by"],
                    row["corrective_action"],
                    row["resolution"],
                )
                for row in reader.alerts(
                    kitchen_id=None, acknowledged=None, limit=10, after_position=0
                )
            }
    finally:
        store.close()
    assert rows == {"by-loop": (None, None, "recovered"), "by-chef": ("chef", "rushed it", None)}


def test_a_restock_resolves_the_low_stock_alert_without_acknowledging_it(
    tmp_path: Path,
) -> None:
    """Stock below its mark raises ``low_stock``; a delivery back to the mark resolves it (not
    acknowledged), and the next fall raises a new open one."""
    store = Store.open(tmp_path / "cp.db")
    try:
        with store.write() as tx:
            tx.insert_kitchen(
                kitchen_id="k1",
                name="k1",
                timezone="UTC",
                location=None,
                status="active",
                created_at=T0,
            )
        for quantity in (2, 10):
            stock.deliver(
                store,
                "k1",
                StockDelivery.model_validate(
                    {"lines": [{"ingredient": "patty", "quantity": quantity, "low_water_mark": 5}]}
                ),
                now=T0,
                actor="ops",
            )
        with store.write() as tx:
            tx.take_stock(kitchen_id="k1", ingredient="patty", quantity=10, at=T0)
            stock.raise_low_stock_alerts(tx, kitchen_id="k1", ingredients=["patty"], now=T0)
        with store.read() as reader:
            rows = reader.alerts(
                kitchen_id="k1", kind="low_stock", acknowledged=None, limit=10, after_position=0
            )
            views = [alerts.alert_view(row) for row in rows]
    finally:
        store.close()
    first, second = views
    assert first["resolution"] == "patty back at 12, at or above the mark of 5"
    assert first["resolved_at"] is not None and first["acknowledged_at"] is None
    assert second["resolved_at"] is None and second["value"] == 2.0
