"""Leases over a real SQLite store with a controlled clock: grant, renew, redeliver, reclaim."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from control_plane import auth, catalogue, intake, leases, orders, reconcile, stock
from control_plane.config import Settings
from control_plane.errors import StockInsufficient
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate, StockDelivery
from control_plane.store import Store
from protocol.events import EventEnvelope
from protocol.sync_api import EnrollRequest, Heartbeat, LeaseRenewal, SyncRequest, SyncResponse

T0 = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Tasks placed as early as possible, so the order's task is leasable at once.
    return Settings(
        db_path=tmp_path / "cp.db",
        start_by_grace_s=120,
        lease_horizon_s=600,
        planning_mode="asap",
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    """A store with kitchen k1 (station grill), SKU burger and one accepted order."""
    instance = Store.open(settings.db_path)
    catalogue.create_kitchen(
        instance,
        KitchenCreate.model_validate(
            {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "Grill"}]}
        ),
        now=T0,
        actor="test",
    )
    catalogue.create_sku(
        instance,
        SkuCreate.model_validate(
            {
                "id": "burger",
                "name": "Burger",
                "station_id": "grill",
                "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": 300}],
                "freshness_window_min": 30,
            }
        ),
        now=T0,
        actor="test",
    )
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": 1}],
            "promised_by": datetime.fromtimestamp(T0 + 1200, UTC).isoformat(),
            "destination": "store-1",
        }
    )
    answer = intake.submit_order(
        instance,
        order,
        key="o-1",
        body_hash="h",
        now=T0,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    assert answer.status == 201
    return instance


@pytest.fixture
def agent(store: Store) -> auth.AgentIdentity:
    token, _ = auth.create_enrollment_token(
        store, kitchen_id="k1", ttl_s=3600, now=T0, actor="test"
    )
    enrolled = auth.enroll(store, EnrollRequest(token=token, name="box", agent_version="1"), now=T0)
    with store.read() as reader:
        return auth.authenticate_agent(reader, enrolled.credential)


def sync_at(
    store: Store,
    agent: auth.AgentIdentity,
    settings: Settings,
    now: float,
    *,
    renewals: list[LeaseRenewal] | None = None,
    events: list[EventEnvelope] | None = None,
    sent_at: float | None = None,
) -> SyncResponse:
    """A sync received at ``now``, built by the agent at ``sent_at`` (default: ``now``)."""
    request = SyncRequest(
        heartbeat=Heartbeat(
            agent_version="1", sent_at=now if sent_at is None else sent_at, outbox_depth=0
        ),
        renewals=renewals or [],
        events=events or [],
        want_leases=4,
    )
    response, _stats = reconcile.sync(store, agent, request, now=now, settings=settings)
    return response


def task_state(store: Store) -> tuple[str, int]:
    with store.read() as reader:
        (task,) = reader.tasks_of_order(
            reader.orders(status=None, kitchen_id=None, limit=1, after_position=0)[0]["id"]
        )
    return str(task["state"]), int(task["fencing_token"])


def test_lease_start_by_is_the_grace_after_now(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A lease granted 10 s after start_after must start within the grace from now."""
    (lease,) = sync_at(store, agent, settings, T0 + 10).leases
    assert (lease.fencing_token, lease.start_by, lease.start_within_s) == (1, T0 + 130, 120)


def test_renewed_lease_is_kept_and_not_sent_again(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """An agent that renews its lease keeps it; the answer carries no new lease."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    renewal = LeaseRenewal(task_id=lease.task_id, fencing_token=lease.fencing_token)
    answer = sync_at(store, agent, settings, T0 + 5, renewals=[renewal])
    assert (answer.leases, answer.lost_leases) == ([], [])
    assert task_state(store) == ("leased", 1)


def test_unrenewed_lease_is_redelivered_unchanged_before_start_by(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """If the answer carrying a lease was lost, the next sync sends the same lease again."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    (again,) = sync_at(store, agent, settings, T0 + 30).leases
    assert (again.task_id, again.fencing_token, again.start_by) == (
        lease.task_id,
        1,
        lease.start_by,
    )
    assert again.start_within_s == pytest.approx(90)


def test_unrenewed_lease_past_start_by_is_taken_back_and_fenced(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """Past start-by with no start and no renewal, the task is re-leased under a new token."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    (fresh,) = sync_at(store, agent, settings, T0 + 500).leases
    assert (fresh.task_id, fresh.fencing_token) == (lease.task_id, 2)
    assert fresh.start_by == T0 + 620


def test_stale_request_built_before_the_lease_does_not_reclaim_it(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A request built before the lease existed, delivered late past start-by and after newer
    requests, speaks for no lease: it does not take it back; a fresh request then does."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    sync_at(store, agent, settings, T0 + 500, sent_at=T0 - 1)
    assert task_state(store) == ("leased", 1)
    (fresh,) = sync_at(store, agent, settings, T0 + 510).leases
    assert (fresh.task_id, fresh.fencing_token) == (lease.task_id, 2)


def test_request_built_before_start_by_and_delayed_past_it_does_not_reclaim(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """An in-order request built while the lease could still start, delivered after its
    start-by, cannot show the agent did not start it: the task stays leased."""
    sync_at(store, agent, settings, T0)
    sync_at(store, agent, settings, T0 + 500, sent_at=T0 + 100)
    assert task_state(store) == ("leased", 1)


# --- stock of cancelled, failed and reassigned tasks -------------------------------------------


def stocked_order(store: Store, settings: Settings, *, key: str, kitchens: tuple[str, ...]) -> str:
    """SKU ``patty-burger`` (one patty a unit), 5 patties at k1, one accepted order of 2 there;
    then, when named in ``kitchens``, kitchen k2 (a grill, 5 patties). Returns the order id."""
    catalogue.create_sku(
        store,
        SkuCreate.model_validate(
            {
                "id": "patty-burger",
                "name": "Patty burger",
                "station_id": "grill",
                "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": 300}],
                "freshness_window_min": 30,
                "ingredients": [{"ingredient": "patty", "per_unit": 1}],
            }
        ),
        now=T0,
        actor="test",
    )
    delivery = StockDelivery.model_validate({"lines": [{"ingredient": "patty", "quantity": 5}]})
    stock.deliver(store, "k1", delivery, now=T0, actor="test")
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "patty-burger", "quantity": 2}],
            "promised_by": datetime.fromtimestamp(T0 + 1200, UTC).isoformat(),
            "destination": "store-1",
        }
    )
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
    order_id = str(json.loads(answer.body)["id"])
    with store.read() as reader:
        (task,) = reader.tasks_of_order(order_id)
    assert task["kitchen_id"] == "k1"
    if "k2" in kitchens:
        catalogue.create_kitchen(
            store,
            KitchenCreate.model_validate(
                {"id": "k2", "name": "K2", "stations": [{"id": "grill", "name": "Grill"}]}
            ),
            now=T0,
            actor="test",
        )
        stock.deliver(store, "k2", delivery, now=T0, actor="test")
    return order_id


def patties(store: Store, kitchen_id: str = "k1") -> float:
    with store.read() as reader:
        row = reader.stock_item(kitchen_id, "patty")
    assert row is not None
    return float(row["quantity"])


def the_task(store: Store, order_id: str) -> Any:
    with store.read() as reader:
        (task,) = reader.tasks_of_order(order_id)
    return task


def task_event(
    agent: auth.AgentIdentity, seq: int, kind: str, payload: dict[str, Any]
) -> EventEnvelope:
    return EventEnvelope(
        agent_id=agent.agent_id,
        kitchen_id=agent.kitchen_id,
        seq=seq,
        event_id=f"ev-{seq}",
        type=kind,
        occurred_at=T0 + 20,
        payload=payload,
    )


def test_cancelling_a_leased_task_keeps_its_stock_until_known_unstarted(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A leased task may be cooking: cancelling its order gives nothing back; once its start-by
    passed with the agent caught up and no start reported, the stock comes back exactly once."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1",))
    sync_at(store, agent, settings, T0)
    assert the_task(store, order_id)["state"] == "leased"
    orders.cancel_order(store, order_id, reason="customer", now=T0 + 10, actor="ops")
    after_cancel = patties(store)
    sync_at(store, agent, settings, T0 + 30)  # before start-by: may still start
    before_start_by = patties(store)
    sync_at(store, agent, settings, T0 + 500)
    sync_at(store, agent, settings, T0 + 600)
    assert (after_cancel, before_start_by, patties(store)) == (3.0, 3.0, 5.0)
    assert audit_count(store, "stock.released") == 1


def test_a_cancelled_leased_task_that_started_keeps_its_stock(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """The kitchen started it before hearing of the cancellation: the stock stays used."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1",))
    (lease,) = [
        lease
        for lease in sync_at(store, agent, settings, T0).leases
        if lease.task_id == the_task(store, order_id)["id"]
    ]
    orders.cancel_order(store, order_id, reason="customer", now=T0 + 10, actor="ops")
    started = task_event(
        agent,
        1,
        "task.started",
        {"task_id": lease.task_id, "fencing_token": lease.fencing_token, "station_id": "grill"},
    )
    sync_at(store, agent, settings, T0 + 30, events=[started])
    sync_at(store, agent, settings, T0 + 600)
    assert patties(store) == 3.0


def test_a_cancelled_leased_task_released_by_the_agent_gives_its_stock_back(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """The agent gives the cancelled task back unstarted: its stock returns at once, once."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1",))
    task_id = str(the_task(store, order_id)["id"])
    sync_at(store, agent, settings, T0)
    orders.cancel_order(store, order_id, reason="customer", now=T0 + 10, actor="ops")
    assert patties(store) == 3.0
    released = task_event(
        agent, 1, "task.released", {"task_id": task_id, "fencing_token": 1, "reason": "cancelled"}
    )
    sync_at(store, agent, settings, T0 + 30, events=[released])
    sync_at(store, agent, settings, T0 + 600)
    assert patties(store) == 5.0
    assert audit_count(store, "stock.released") == 1


def test_a_task_failed_before_starting_gives_its_stock_back(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """``task.failed`` with ``started: false``: nothing was cooked, the stock goes back."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1",))
    task_id = str(the_task(store, order_id)["id"])
    sync_at(store, agent, settings, T0)
    failed = task_event(
        agent,
        1,
        "task.failed",
        {"task_id": task_id, "fencing_token": 1, "reason": "oven_fault", "started": False},
    )
    sync_at(store, agent, settings, T0 + 30, events=[failed])
    assert the_task(store, order_id)["state"] == "failed"
    assert patties(store) == 5.0


def test_reassigning_a_planned_task_moves_its_stock(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A planned task moved to k2 gives its stock back at k1 and takes it at k2."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1", "k2"))
    task_id = str(the_task(store, order_id)["id"])
    leases.reassign(
        store,
        task_id,
        kitchen_id="k2",
        reason="ops",
        now=T0 + 5,
        actor="ops",
        unreachable_after_s=60,
    )
    assert (patties(store, "k1"), patties(store, "k2")) == (5.0, 3.0)


def test_reassigning_a_leased_task_keeps_the_old_hold_and_takes_new_stock(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A leased task (the old kitchen may cook it) moved to k2: stock is used at both."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1", "k2"))
    task_id = str(the_task(store, order_id)["id"])
    sync_at(store, agent, settings, T0)
    leases.reassign(
        store,
        task_id,
        kitchen_id="k2",
        reason="ops",
        now=T0 + 5,
        actor="ops",
        unreachable_after_s=60,
    )
    assert (patties(store, "k1"), patties(store, "k2")) == (3.0, 3.0)
    assert audit_count(store, "stock.kept") == 1


def test_reassigning_to_a_kitchen_without_the_stock_is_refused_409(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """k2 has no patties tracked as short (1 left, 2 needed): 409 ``stock-insufficient``,
    nothing changes."""
    order_id = stocked_order(store, settings, key="o-stock", kitchens=("k1", "k2"))
    task_id = str(the_task(store, order_id)["id"])
    with store.write() as tx:
        assert tx.take_stock(kitchen_id="k2", ingredient="patty", quantity=4, at=T0) == 1
    with pytest.raises(StockInsufficient) as refused:
        leases.reassign(
            store,
            task_id,
            kitchen_id="k2",
            reason="ops",
            now=T0 + 5,
            actor="ops",
            unreachable_after_s=60,
        )
    assert (refused.value.status, refused.value.slug, refused.value.reason) == (
        409,
        "stock-insufficient",
        "out_of_stock",
    )
    assert the_task(store, order_id)["kitchen_id"] == "k1"
    assert (patties(store, "k1"), patties(store, "k2")) == (3.0, 1.0)


def audit_count(store: Store, action: str) -> int:
    with store.read() as reader:
        return sum(1 for row in reader.audit_rows() if row["action"] == action)
