"""Stock follows re-planned tasks: a move gives the reservation back at the old kitchen and
takes it at the new one by conditional decrement, in the move's transaction, or the task stays
(flagged); cancelling a moved order gives its stock back at the new kitchen, once."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from control_plane import catalogue, intake, orders, stock
from control_plane.config import Settings
from control_plane.control_loop import ControlLoop
from control_plane.loop_inputs import read_inputs
from control_plane.metrics import Metrics
from control_plane.planning.replan import ReplanSettings
from control_plane.planning_state import PlanningState
from control_plane.replanning import apply_replan, plan_replan
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate, StockDelivery
from control_plane.store import Store
from tests.fixtures_cp import store_before

T0 = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db", backpressure_min_dwell_s=0)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """Kitchen k1 (grill, 4 slots) with 5 patties and 5 buns, SKU burger (a patty and a bun
    per unit); kitchen k2 is added by each test (after the order lands at k1)."""
    instance = Store.open(settings.db_path)
    add_kitchen(instance, "k1")
    catalogue.create_sku(
        instance,
        SkuCreate.model_validate(
            {
                "id": "burger",
                "name": "Burger",
                "station_id": "grill",
                "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": 300}],
                "freshness_window_min": 60,
                "ingredients": [
                    {"ingredient": "patty", "per_unit": 1},
                    {"ingredient": "bun", "per_unit": 1},
                ],
            }
        ),
        now=T0,
        actor="test",
    )
    deliver(instance, "k1", patty=5, bun=5)
    try:
        yield instance
    finally:
        instance.close()


def add_kitchen(store: Store, kitchen_id: str) -> None:
    catalogue.create_kitchen(
        store,
        KitchenCreate.model_validate(
            {
                "id": kitchen_id,
                "name": kitchen_id,
                "stations": [{"id": "grill", "name": "Grill", "slots": 4}],
            }
        ),
        now=T0,
        actor="test",
    )


def deliver(store: Store, kitchen_id: str, **quantities: float) -> None:
    lines = [{"ingredient": name, "quantity": q} for name, q in quantities.items()]
    stock.deliver(
        store, kitchen_id, StockDelivery.model_validate({"lines": lines}), now=T0, actor="ops"
    )


def place(store: Store, settings: Settings, *, quantity: int) -> dict[str, Any]:
    """An order of ``quantity`` burgers, promised in three hours."""
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": quantity}],
            "promised_by": datetime.fromtimestamp(T0 + 3 * 3600, UTC).isoformat(),
            "destination": "store-1",
            "transport_min": 10,
        }
    )
    key = str(uuid.uuid4())
    answer = intake.submit_order(
        store,
        order,
        key=key,
        body_hash=key,
        now=T0,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    assert answer.status == 201, answer.body
    body: dict[str, Any] = json.loads(answer.body)
    return body


def on_hand(store: Store, kitchen_id: str) -> dict[str, float]:
    with store.read() as reader:
        return {
            str(row["ingredient"]): float(row["quantity"])
            for row in reader.kitchen_stock(kitchen_id)
        }


def reservations(store: Store, order_id: str) -> list[tuple[str, str, float, str | None]]:
    """(kitchen, ingredient, quantity, release reason or None while held), in order taken."""
    with store.read() as reader:
        rows = reader.stock_reservations_of_order(order_id)
    return sorted(
        (
            (str(r["kitchen_id"]), str(r["ingredient"]), float(r["quantity"]), r["release_reason"])
            for r in rows
        ),
        key=lambda r: (r[3] is None, r[0], r[1]),
    )


def audited(store: Store, action: str) -> list[dict[str, Any]]:
    with store.read() as reader:
        rows = reader.audit_page(after_seq=0, limit=1000, action=action)
    return [dict(row) | {"details": json.loads(row["details_json"])} for row in rows]


def pause_k1_and_tick(store: Store, settings: Settings) -> ControlLoop:
    catalogue.set_kitchen_status(store, "k1", "paused", now=T0 + 5, actor="ops")
    loop = ControlLoop(
        store=store,
        settings=settings,
        metrics=Metrics(),
        planning=PlanningState(),
        clock=lambda: T0 + 10,
    )
    loop.tick()
    return loop


def task_of(store: Store, order_id: str) -> sqlite3.Row:
    with store.read() as reader:
        (task,) = reader.tasks_of_order(order_id)
    return task


def test_a_moved_task_takes_its_stock_to_the_new_kitchen_and_gives_it_back_at_the_old(
    store: Store, settings: Settings
) -> None:
    """k1 pauses: its task for two burgers moves to k2, k1 gets its 2 patties and 2 buns back,
    k2 gives 2 patties (buns are not tracked there), each side audited ``task_moved``."""
    order = place(store, settings, quantity=2)
    add_kitchen(store, "k2")
    deliver(store, "k2", patty=10)
    assert on_hand(store, "k1") == {"patty": 3, "bun": 3}
    pause_k1_and_tick(store, settings)
    assert task_of(store, order["id"])["kitchen_id"] == "k2"
    assert on_hand(store, "k1") == {"patty": 5, "bun": 5}
    assert on_hand(store, "k2") == {"patty": 8}
    assert reservations(store, order["id"]) == [
        ("k1", "bun", 2.0, "task_moved"),
        ("k1", "patty", 2.0, "task_moved"),
        ("k2", "patty", 2.0, None),
    ]
    released = audited(store, "stock.released")
    reserved = audited(store, "stock.reserved")
    assert sorted((r["kitchen_id"], r["reason"], r["actor_type"]) for r in released) == [
        ("k1", "task_moved", "system"),
        ("k1", "task_moved", "system"),
    ]
    assert [(r["kitchen_id"], r["reason"], r["details"]["quantity"]) for r in reserved] == [
        ("k2", "task_moved", 2.0)
    ]


def test_a_task_does_not_move_to_a_kitchen_short_of_its_stock(
    store: Store, settings: Settings
) -> None:
    """k2 has one patty, the task needs two: it stays at k1 flagged ``no_feasible_kitchen``, its
    reservation held there and k2's stock untouched."""
    order = place(store, settings, quantity=2)
    add_kitchen(store, "k2")
    deliver(store, "k2", patty=1)
    pause_k1_and_tick(store, settings)
    task = task_of(store, order["id"])
    assert (task["kitchen_id"], task["flag_reason"]) == ("k1", "no_feasible_kitchen")
    assert on_hand(store, "k1") == {"patty": 3, "bun": 3}
    assert on_hand(store, "k2") == {"patty": 1}
    assert [r[3] for r in reservations(store, order["id"])] == [None, None]
    assert audited(store, "task.replanned") == []


def test_stock_taken_after_the_read_keeps_the_task_home_flagged(
    store: Store, settings: Settings
) -> None:
    """The core saw two patties at k2, but intake took one before the write: the conditional
    decrement fails, the whole move rolls back, and the task stays at k1, flagged, audited with
    what ran short."""
    order = place(store, settings, quantity=2)
    add_kitchen(store, "k2")
    deliver(store, "k2", patty=2)
    catalogue.set_kitchen_status(store, "k1", "paused", now=T0 + 5, actor="ops")
    now = T0 + 10
    with store.read() as reader:
        inputs = read_inputs(reader, now=now, after_audit_seq=0)
    plan = plan_replan(inputs, PlanningState().prep_model(), ReplanSettings())
    assert plan is not None and [m.to_kitchen_id for m in plan.result.moves] == ["k2"]
    with store.write() as tx:
        assert tx.take_stock(kitchen_id="k2", ingredient="patty", quantity=1, at=now) == 1
    with store.write() as tx:
        applied = apply_replan(tx, inputs, plan, now=now)
    task = task_of(store, order["id"])
    (flag,) = audited(store, "task.unplaceable")
    assert applied.moved == () and applied.out_of_stock == (task["id"],)
    assert (task["kitchen_id"], task["fencing_token"]) == ("k1", 0)
    assert task["flag_reason"] == "no_feasible_kitchen"
    assert flag["details"]["out_of_stock"] == ["patty"]
    assert on_hand(store, "k1") == {"patty": 3, "bun": 3}
    assert on_hand(store, "k2") == {"patty": 1}
    assert [(*r[:2], r[3]) for r in reservations(store, order["id"])] == [
        ("k1", "bun", None),
        ("k1", "patty", None),
    ]
    assert audited(store, "task.replanned") == audited(store, "stock.released") == []


def test_cancelling_a_moved_order_gives_its_stock_back_at_the_new_kitchen_once(
    store: Store, settings: Settings
) -> None:
    """After the move, cancelling returns k2's patties (reason ``order_cancelled``); cancelling
    again returns nothing more, and k1 keeps exactly what it had before the order."""
    order = place(store, settings, quantity=2)
    add_kitchen(store, "k2")
    deliver(store, "k2", patty=10)
    pause_k1_and_tick(store, settings)
    for _ in range(2):
        orders.cancel_order(store, order["id"], reason="customer", now=T0 + 20, actor="ops")
    assert on_hand(store, "k2") == {"patty": 10}
    assert on_hand(store, "k1") == {"patty": 5, "bun": 5}
    assert reservations(store, order["id"])[-1] == ("k2", "patty", 2.0, "order_cancelled")
    cancelled = [r for r in audited(store, "stock.released") if r["reason"] == "order_cancelled"]
    assert [(r["kitchen_id"], r["details"]["quantity"]) for r in cancelled] == [("k2", 2.0)]


def test_a_task_moved_away_and_back_holds_one_reservation(store: Store, settings: Settings) -> None:
    """k1 pauses (the task goes to k2), resumes, then k2 pauses (it comes back): k1 holds the
    order's stock again, one live reservation per ingredient, and k2 has all of its back."""
    order = place(store, settings, quantity=1)
    add_kitchen(store, "k2")
    deliver(store, "k2", patty=4, bun=4)
    loop = pause_k1_and_tick(store, settings)
    assert task_of(store, order["id"])["kitchen_id"] == "k2"
    catalogue.set_kitchen_status(store, "k1", "active", now=T0 + 15, actor="ops")
    catalogue.set_kitchen_status(store, "k2", "paused", now=T0 + 15, actor="ops")
    loop.tick()
    assert task_of(store, order["id"])["kitchen_id"] == "k1"
    held = [r for r in reservations(store, order["id"]) if r[3] is None]
    assert held == [("k1", "bun", 1.0, None), ("k1", "patty", 1.0, None)]
    assert on_hand(store, "k1") == {"patty": 4, "bun": 4}
    assert on_hand(store, "k2") == {"patty": 4, "bun": 4}


def test_reservations_made_before_migration_0008_are_kept(tmp_path: Path) -> None:
    """A store at 0007 with a held and a released reservation keeps both through 0008; the
    released one is recorded as given back for a cancellation."""
    path = tmp_path / "old.db"
    conn = store_before(path, "0008_reservations_follow_moves_and_alert_resolution")
    conn.execute(
        "INSERT INTO orders (id, idempotency_key, status, promised_by, destination,"
        " transport_min, priority, created_at, updated_at)"
        " VALUES ('o1', 'o1', 'planned', 0, 'd', 0, 'normal', 0, 0)"
    )
    conn.executemany(
        "INSERT INTO stock_reservations (order_id, task_id, kitchen_id, ingredient, quantity,"
        " reserved_at, released_at) VALUES ('o1', ?, 'k1', 'patty', 1, ?, ?)",
        [("t1", T0, None), ("t2", T0, T0 + 1)],
    )
    conn.close()
    migrated = Store.open(path)
    try:
        with migrated.read() as reader:
            rows = [
                (r["task_id"], r["released_at"], r["release_reason"])
                for r in reader.stock_reservations_of_order("o1")
            ]
    finally:
        migrated.close()
    assert rows == [("t1", None, None), ("t2", T0 + 1, "order_cancelled")]


def test_a_batch_cancelled_with_its_last_order_gives_back_every_orders_stock(
    store: Store,
) -> None:
    """One task cooks for o1 and o2, each holding its patty: cancelling o1 keeps the batch (and
    the stock) for o2; cancelling o2 cancels it and gives back both patties, each once."""
    with store.write() as tx:
        for order_id in ("o1", "o2"):
            tx.insert_order(
                order_id=order_id,
                idempotency_key=order_id,
                status="planned",
                reason=None,
                kitchen_id="k1",
                promised_by=T0 + 3600,
                destination="store",
                transport_min=0.0,
                priority="normal",
                predicted_ready_at=T0 + 600,
                created_at=T0,
            )
            tx.insert_order_item(order_id=order_id, line=0, sku_id="burger", quantity=1)
        tx.insert_task(
            task_id="t-batch",
            kitchen_id="k1",
            station_id="grill",
            sku_id="burger",
            quantity=2,
            duration_s=300.0,
            start_after=T0,
            finish_by=T0 + 3600,
            predicted_ready_at=T0 + 300,
            created_at=T0,
        )
        for order_id in ("o1", "o2"):
            tx.link_task_order(task_id="t-batch", order_id=order_id)
            stock.reserve(
                tx,
                order_id=order_id,
                kitchen_id="k1",
                task_needs={"t-batch": {"patty": 1.0}},
                now=T0,
            )
    orders.cancel_order(store, "o1", reason="customer", now=T0 + 1, actor="ops")
    kept = on_hand(store, "k1")["patty"]
    orders.cancel_order(store, "o2", reason="customer", now=T0 + 2, actor="ops")
    assert kept == 3
    assert on_hand(store, "k1")["patty"] == 5
    assert [r[3] for r in reservations(store, "o1") + reservations(store, "o2")] == [
        "order_cancelled",
        "order_cancelled",
    ]
