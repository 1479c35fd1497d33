"""Operators' decisions over a real SQLite store with a controlled clock: cancellation, waste,
stranded tasks, reassignment, re-planning rules, alert acknowledgement."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from control_plane import alerts, audit, auth, catalogue, fleet, intake, leases, orders, reconcile
from control_plane.config import Settings
from control_plane.errors import StateConflict
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate
from control_plane.store import Store
from protocol.events import EventEnvelope, EventType
from protocol.sync_api import (
    EnrollRequest,
    Heartbeat,
    Lease,
    LeaseRenewal,
    SyncRequest,
    SyncResponse,
)

T0 = 1_800_000_000.0
UNREACHABLE_AFTER_S = 120.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        db_path=tmp_path / "cp.db",
        start_by_grace_s=120,
        lease_horizon_s=600,
        agent_unreachable_after_s=UNREACHABLE_AFTER_S,
        # Tasks placed as early as possible, so an order's task is leasable at once.
        planning_mode="asap",
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    """A store with kitchens k1 and k2 (station grill each) and SKU burger."""
    instance = Store.open(settings.db_path)
    for kitchen_id in ("k1", "k2"):
        kitchen = {"id": kitchen_id, "name": kitchen_id, "stations": [{"id": "grill", "name": "G"}]}
        catalogue.create_kitchen(
            instance, KitchenCreate.model_validate(kitchen), now=T0, actor="test"
        )
    sku = {
        "id": "burger",
        "name": "Burger",
        "station_id": "grill",
        "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": 300}],
        "freshness_window_min": 30,
    }
    catalogue.create_sku(instance, SkuCreate.model_validate(sku), now=T0, actor="test")
    return instance


def place(store: Store, settings: Settings, *, now: float = T0) -> str:
    """Place a one-burger order due in 20 minutes; returns its id."""
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": 1}],
            "promised_by": datetime.fromtimestamp(now + 1200, UTC).isoformat(),
            "destination": "store-1",
        }
    )
    answer = intake.submit_order(
        store,
        order,
        key=str(uuid.uuid4()),
        body_hash="h",
        now=now,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    assert answer.status == 201
    return str(json.loads(answer.body)["id"])


@dataclass
class Box:
    """A scripted agent: its identity, outbox seq and held leases."""

    store: Store
    settings: Settings
    identity: auth.AgentIdentity
    next_seq: int = 1
    held: dict[str, int] = field(default_factory=dict)

    def event(self, event_type: str, payload: dict[str, Any], *, at: float) -> EventEnvelope:
        envelope = EventEnvelope(
            agent_id=self.identity.agent_id,
            kitchen_id=self.identity.kitchen_id,
            seq=self.next_seq,
            event_id=str(uuid.uuid4()),
            type=event_type,
            occurred_at=at,
            payload=payload,
        )
        self.next_seq += 1
        return envelope

    def sync(
        self, now: float, events: list[EventEnvelope] | None = None, *, want: int = 4
    ) -> tuple[SyncResponse, reconcile.SyncStats]:
        request = SyncRequest(
            heartbeat=Heartbeat(agent_version="1", sent_at=now, outbox_depth=len(events or [])),
            events=events or [],
            renewals=[LeaseRenewal(task_id=t, fencing_token=f) for t, f in self.held.items()],
            want_leases=want,
        )
        response, stats = reconcile.sync(
            self.store, self.identity, request, now=now, settings=self.settings
        )
        for lease in response.leases:
            self.held[lease.task_id] = lease.fencing_token
        for task_id in response.lost_leases:
            self.held.pop(task_id, None)
        return response, stats

    def started(self, lease: Lease, *, at: float) -> EventEnvelope:
        payload = {"task_id": lease.task_id, "fencing_token": lease.fencing_token}
        return self.event(EventType.TASK_STARTED, payload | {"station_id": "grill"}, at=at)

    def done(self, lease: Lease, *, at: float) -> EventEnvelope:
        payload = {"task_id": lease.task_id, "fencing_token": lease.fencing_token}
        return self.event(EventType.TASK_DONE, payload | {"quantity": 1}, at=at)


def enroll(store: Store, settings: Settings, kitchen_id: str = "k1") -> Box:
    token, _ = auth.create_enrollment_token(
        store, kitchen_id=kitchen_id, ttl_s=3600, now=T0, actor="test"
    )
    enrolled = auth.enroll(store, EnrollRequest(token=token, name="box", agent_version="1"), now=T0)
    with store.read() as reader:
        identity = auth.authenticate_agent(reader, enrolled.credential)
    return Box(store, settings, identity)


def task_of(store: Store, order_id: str) -> dict[str, Any]:
    with store.read() as reader:
        (task,) = reader.tasks_of_order(order_id)
        return dict(task)


def order_status(store: Store, order_id: str) -> str:
    with store.read() as reader:
        row = reader.order(order_id)
        assert row is not None
        return str(row["status"])


def actions(store: Store, order_id: str) -> list[str]:
    with store.read() as reader:
        return [str(row["action"]) for row in reader.audit_of_order(order_id)]


def audit_record(store: Store, order_id: str, action: str) -> dict[str, Any]:
    with store.read() as reader:
        row = next(r for r in reader.audit_of_order(order_id) if r["action"] == action)
        return audit.record_view(row)


def cancel(store: Store, order_id: str, *, now: float) -> orders.Cancelled:
    return orders.cancel_order(store, order_id, reason="customer_cancelled", now=now, actor="ops")


def test_cancelling_a_planned_order_cancels_its_task(store: Store, settings: Settings) -> None:
    """A never-leased task is simply cancelled with the order, and nothing leases it later."""
    order_id = place(store, settings)
    result = cancel(store, order_id, now=T0 + 1)
    box = enroll(store, settings)
    answer, _ = box.sync(T0 + 2)
    assert result.order["status"] == "cancelled"
    assert task_of(store, order_id)["state"] == "cancelled"
    assert answer.leases == []
    assert actions(store, order_id)[-2:] == ["order.cancelled", "task.cancelled"]


def test_cancelled_lease_reaches_its_holder_on_the_next_sync(
    store: Store, settings: Settings
) -> None:
    """The agent holding the lease gets a Cancellation for that lease, not a lost lease."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    (lease,) = box.sync(T0 + 1)[0].leases
    cancel(store, order_id, now=T0 + 2)
    answer, stats = box.sync(T0 + 3)
    (cancellation,) = answer.cancellations
    assert (cancellation.task_id, cancellation.fencing_token) == (lease.task_id, 1)
    assert cancellation.reason == "order_cancelled"
    assert (answer.lost_leases, stats.cancellations) == ([], 1)


def test_cancelling_twice_is_harmless(store: Store, settings: Settings) -> None:
    """A repeated cancel answers the cancelled order and audits nothing new."""
    order_id = place(store, settings)
    cancel(store, order_id, now=T0 + 1)
    before = actions(store, order_id)
    again = cancel(store, order_id, now=T0 + 2)
    assert again.order["status"] == "cancelled"
    assert actions(store, order_id) == before


def test_ready_order_cannot_be_cancelled(store: Store, settings: Settings) -> None:
    """Cancelling food that is ready is a 409 state conflict naming the status."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    (lease,) = box.sync(T0 + 1)[0].leases
    box.sync(T0 + 2, [box.started(lease, at=T0 + 2), box.done(lease, at=T0 + 2)])
    with pytest.raises(StateConflict, match="ready") as refused:
        cancel(store, order_id, now=T0 + 3)
    assert refused.value.reason == "order_not_cancellable"


def test_food_cooked_offline_for_a_cancelled_order_is_recorded_as_waste(
    store: Store, settings: Settings
) -> None:
    """The kitchen started and finished the task offline; the order was cancelled meanwhile:
    on reconnect the start is a conflict, the completion is waste, never a ready order."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    (lease,) = box.sync(T0 + 1)[0].leases
    cancel(store, order_id, now=T0 + 60)
    events = [box.started(lease, at=T0 + 30), box.done(lease, at=T0 + 400)]
    answer, stats = box.sync(T0 + 500, events)
    task = task_of(store, order_id)
    waste = audit_record(store, order_id, "task.wasted")
    assert answer.acked_seq == 2
    assert (task["state"], task["wasted_quantity"]) == ("cancelled", 1)
    assert stats.wasted_tasks == 1
    assert stats.conflicts == {"started_after_cancel": 1}
    assert (waste["reason"], waste["actor_type"]) == ("order_cancelled", "agent")
    assert order_status(store, order_id) == "cancelled"


def test_cancelling_an_order_whose_food_is_done_records_waste_at_once(
    store: Store, settings: Settings
) -> None:
    """With two lines, one done and one open, cancelling wastes the done batch now."""
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": 1}, {"sku_id": "burger", "quantity": 2}],
            "promised_by": datetime.fromtimestamp(T0 + 1200, UTC).isoformat(),
            "destination": "store-1",
        }
    )
    answer = intake.submit_order(
        store,
        order,
        key="two-lines",
        body_hash="h",
        now=T0,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    order_id = str(json.loads(answer.body)["id"])
    box = enroll(store, settings)
    first, _second = box.sync(T0 + 1)[0].leases
    box.sync(T0 + 2, [box.started(first, at=T0 + 2), box.done(first, at=T0 + 3)])
    result = cancel(store, order_id, now=T0 + 4)
    assert result.wasted_tasks == 1
    assert "task.wasted" in actions(store, order_id)


def test_tasks_of_a_silent_agent_are_stranded_and_stay(store: Store, settings: Settings) -> None:
    """An agent silent past the threshold strands its leased task: flagged, not re-leased to
    anyone, not reclaimed, even long after its start-by."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    box.sync(T0 + 1)
    later = T0 + 1 + UNREACHABLE_AFTER_S + 600  # also past start_by
    other = enroll(store, settings)
    answer, _ = other.sync(later)
    task_id = task_of(store, order_id)["id"]
    with store.read() as reader:
        row = reader.task(task_id)
        assert row is not None
        flagged = fleet.task_is_stranded(
            reader, row, now=later, unreachable_after_s=UNREACHABLE_AFTER_S
        )
    assert answer.leases == []
    assert task_of(store, order_id)["state"] == "leased"
    assert flagged is True


def test_reachable_agent_past_start_by_without_a_start_gives_the_task_back(
    store: Store, settings: Settings
) -> None:
    """Past start-by, an agent that syncs, is caught up and does not renew loses the task."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    box.sync(T0 + 1)
    box.held.clear()  # the agent never stored the lease (e.g. its disk was replaced)
    box.sync(T0 + 200, want=0)
    assert task_of(store, order_id)["state"] == "planned"
    assert "task.lease_expired" in actions(store, order_id)


def test_agent_still_draining_its_outbox_keeps_its_expired_lease(
    store: Store, settings: Settings
) -> None:
    """While the agent has events left behind (a gap), a missing start is not proof of no
    start, so the lease is not taken back."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    box.sync(T0 + 1)
    box.held.clear()
    box.next_seq = 5  # seqs 1-4 are still on their way: a gap
    answer, _ = box.sync(
        T0 + 200,
        [
            box.event(
                EventType.DEVICE_STATUS, {"device_id": "grill-1", "status": "online"}, at=T0 + 150
            )
        ],
        want=0,
    )
    assert answer.resend_from == 1
    assert task_of(store, order_id)["state"] == "leased"


def test_reassigning_a_stranded_task_fences_out_the_old_holder(
    store: Store, settings: Settings
) -> None:
    """An operator moves a stranded started task to k2: new token, audited as a possible
    duplicate; the old holder's later completion is a conflict, never applied."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    (lease,) = box.sync(T0 + 1)[0].leases
    box.sync(T0 + 10, [box.started(lease, at=T0 + 5)])
    later = T0 + 10 + UNREACHABLE_AFTER_S + 1
    moved = leases.reassign(
        store,
        lease.task_id,
        kitchen_id="k2",
        reason="k1 unreachable",
        now=later,
        actor="ops",
        unreachable_after_s=UNREACHABLE_AFTER_S,
    )
    record = audit_record(store, order_id, "task.reassigned")
    new_box = enroll(store, settings, "k2")
    (new_lease,) = new_box.sync(later + 1)[0].leases
    answer, stats = box.sync(later + 2, [box.done(lease, at=later)])
    assert (moved["state"], moved["kitchen_id"], moved["fencing_token"]) == ("planned", "k2", 2)
    assert record["details"]["possible_duplicate"] is True
    assert record["details"]["stranded"] is True
    assert new_lease.fencing_token == 3  # reassignment fenced 2 off; the new lease is 3
    assert answer.lost_leases == [lease.task_id]
    assert stats.conflicts == {"duplicate_after_reassignment": 1}
    assert task_of(store, order_id)["state"] == "leased"


def test_done_task_cannot_be_reassigned(store: Store, settings: Settings) -> None:
    """Only planned, leased or started tasks can move."""
    order_id = place(store, settings)
    box = enroll(store, settings)
    (lease,) = box.sync(T0 + 1)[0].leases
    box.sync(T0 + 2, [box.started(lease, at=T0 + 2), box.done(lease, at=T0 + 3)])
    with pytest.raises(StateConflict) as refused:
        leases.reassign(
            store,
            task_of(store, order_id)["id"],
            kitchen_id=None,
            reason="oops",
            now=T0 + 4,
            actor="ops",
            unreachable_after_s=UNREACHABLE_AFTER_S,
        )
    assert refused.value.reason == "task_not_reassignable"


def test_alert_acknowledgement_records_the_corrective_action(
    store: Store, settings: Settings
) -> None:
    """An acknowledged alert carries who and what was done, once; the audit says so too."""
    box = enroll(store, settings)
    raised = box.event(
        EventType.ALERT_RAISED,
        {"alert_id": "a-1", "kind": "cold_holding", "severity": "critical", "message": "9 C"},
        at=T0 + 1,
    )
    box.sync(T0 + 2, [raised])
    kwargs = {"agent_id": box.identity.agent_id, "alert_id": "a-1", "actor": "chef"}
    view, first = alerts.acknowledge(store, corrective_action="moved stock", now=T0 + 3, **kwargs)
    _, second = alerts.acknowledge(store, corrective_action="again", now=T0 + 4, **kwargs)
    with store.read() as reader:
        (record,) = reader.audit_page(after_seq=0, limit=10, action="alert.acknowledged")
    assert (first, second) == (True, False)
    assert (view["acknowledged_by"], view["corrective_action"]) == ("chef", "moved stock")
    assert json.loads(record["details_json"])["corrective_action"] == "moved stock"


def test_open_work_per_station_follows_every_task_change(store: Store, settings: Settings) -> None:
    """The stored open work per station always equals the sum over open tasks, through
    intake, lease, start, done, cancel and reassignment."""

    def stored_and_summed() -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
        with store.read() as reader:
            stored = {
                (r["kitchen_id"], r["station_id"]): r["open_work_s"]
                for r in reader.station_open_work()
                if r["open_work_s"] > 1e-9
            }
            rows = reader.tasks(
                kitchen_id=None,
                state=None,
                order_id=None,
                open_leases_of_agents=None,
                limit=1000,
                after_position=0,
            )
        summed: dict[tuple[str, str], float] = {}
        for row in rows:
            if row["state"] in ("planned", "leased", "started"):
                key = (row["kitchen_id"], row["station_id"])
                summed[key] = summed.get(key, 0.0) + row["duration_s"]
        return stored, summed

    orders_placed = [place(store, settings) for _ in range(4)]
    box = enroll(store, settings)
    first, *_ = box.sync(T0 + 1)[0].leases
    box.sync(T0 + 2, [box.started(first, at=T0 + 2), box.done(first, at=T0 + 3)])
    open_orders = [o for o in orders_placed if task_of(store, o)["id"] != first.task_id]
    cancel(store, open_orders[0], now=T0 + 4)
    task_id = task_of(store, open_orders[1])["id"]
    leases.reassign(
        store,
        task_id,
        kitchen_id="k2",
        reason="balance",
        now=T0 + 5,
        actor="ops",
        unreachable_after_s=UNREACHABLE_AFTER_S,
    )
    stored, summed = stored_and_summed()
    assert stored.keys() == summed.keys()
    assert all(stored[key] == pytest.approx(summed[key]) for key in summed)


def _bookings_stored_and_counted(store: Store) -> tuple[dict[Any, int], dict[Any, int]]:
    """The booked intervals the triggers keep, and the same counted over the open tasks."""
    with store.read() as reader:
        conn = reader._conn
        stored = {
            (r["kitchen_id"], r["station_id"], r["start_after"], r["planned_finish"]): r["n"]
            for r in conn.execute("SELECT * FROM station_bookings")
        }
        counted = {
            (r["kitchen_id"], r["station_id"], r["start_after"], r["planned_finish"]): r["n"]
            for r in conn.execute(
                "SELECT kitchen_id, station_id, start_after, planned_finish, COUNT(*) AS n"
                " FROM prep_tasks WHERE state IN ('planned', 'leased', 'started')"
                " GROUP BY kitchen_id, station_id, start_after, planned_finish"
            )
        }
    return stored, counted


def test_booked_intervals_follow_every_task_change(store: Store, settings: Settings) -> None:
    """The booked intervals intake plans against (kept by triggers, migration 0013) always
    equal the open tasks counted by interval: through intake, lease, start, done, cancel,
    reassignment, a re-planned start (its planned finish follows), a move and a deletion. No
    emptied interval is left behind."""
    orders_placed = [place(store, settings) for _ in range(6)]
    stored, counted = _bookings_stored_and_counted(store)
    assert stored == counted and sum(stored.values()) == 6
    box = enroll(store, settings)
    first, *_ = box.sync(T0 + 1)[0].leases
    box.sync(T0 + 2, [box.started(first, at=T0 + 2), box.done(first, at=T0 + 3)])
    open_orders = [o for o in orders_placed if task_of(store, o)["id"] != first.task_id]
    cancel(store, open_orders[0], now=T0 + 4)
    leases.reassign(
        store,
        task_of(store, open_orders[1])["id"],
        kitchen_id="k2",
        reason="balance",
        now=T0 + 5,
        actor="ops",
        unreachable_after_s=UNREACHABLE_AFTER_S,
    )
    assert _bookings_stored_and_counted(store)[0] == _bookings_stored_and_counted(store)[1]
    moved, gone = task_of(store, open_orders[2])["id"], task_of(store, open_orders[3])["id"]
    with store.write() as tx:
        conn = tx._conn
        conn.execute("UPDATE prep_tasks SET start_after = start_after - 600 WHERE id = ?", (moved,))
        conn.execute("UPDATE prep_tasks SET station_id = 'cold-line' WHERE id = ?", (moved,))
        conn.execute("DELETE FROM task_orders WHERE task_id = ?", (gone,))
        conn.execute("DELETE FROM stock_reservations WHERE task_id = ?", (gone,))
        conn.execute("DELETE FROM prep_tasks WHERE id = ?", (gone,))
    stored, counted = _bookings_stored_and_counted(store)
    assert stored == counted
    assert all(n > 0 for n in stored.values())
    assert sum(stored.values()) == 6 - 1 - 1 - 1  # done, cancelled, deleted
