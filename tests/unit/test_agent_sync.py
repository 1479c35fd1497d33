"""One sync round trip against the shipped fake control plane, with a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edge_agent.errors import RetryLater
from edge_agent.executor import RunState
from edge_agent.links.control_plane import ControlPlaneClient
from edge_agent.store import Store
from edge_agent.sync import SyncCycle
from edge_agent.testing import FakeControlPlane
from protocol import Lease, RecipeStep, SyncResponse


@dataclass
class FakeClock:
    """Time that moves only when told to (and by a fixed amount per monotonic read)."""

    mono: float = 1000.0
    wall_time: float = 1_767_225_600.0
    step: float = 0.0

    def monotonic(self) -> float:
        value = self.mono
        self.mono += self.step
        return value

    def wall(self) -> float:
        return self.wall_time


def lease(task_id: str = "t1", start_within_s: float = 90.0) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id="k1",
        station_id="s1",
        sku_id="pie",
        sku_name="Pie",
        quantity=1,
        order_ids=["o1"],
        steps=[RecipeStep(index=0, name="bake", equipment_kind="oven", duration_s=5)],
        fencing_token=3,
        start_after=0,
        finish_by=2e9,
        start_by=2e9,
        start_within_s=start_within_s,
    )


@pytest.fixture
def fake() -> FakeControlPlane:
    return FakeControlPlane(kitchen_id="k1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cycle(fake: FakeControlPlane, store: Store, clock: FakeClock) -> Iterator[SyncCycle]:
    with ControlPlaneClient(
        "http://cp", credential=fake.credential, transport=fake.transport()
    ) as client:
        yield SyncCycle(
            store=store,
            client=client,
            clock=clock,
            agent_id="agent-1",
            kitchen_id="k1",
            max_active_tasks=2,
            link_states=lambda: {"mqtt": "up"},
        )


def test_outbox_events_are_pushed_in_seq_order_and_forgotten_once_acked(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """Three events arrive as seq 1..3 and the acked outbox is empty afterwards."""
    for n in range(3):
        store.append_event(type="task.started", payload={"n": n}, occurred_at=1.0)
    outcome = cycle.run_once()
    assert outcome.acked == 3
    assert [e.seq for e in fake.requests[0].events] == [1, 2, 3]
    assert store.outbox_depth() == 0 and store.sequence() == (3, 3)
    assert fake.requests[0].heartbeat.links == {"mqtt": "up"}


def test_a_large_backlog_drains_in_batches_of_at_most_500(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """1,200 buffered events take three round trips, each in order, none over 500."""
    for _ in range(1200):
        store.append_event(type="x", payload={}, occurred_at=1.0)
    rounds = 0
    while store.outbox_depth():
        cycle.run_once()
        rounds += 1
    assert rounds == 3
    assert [len(r.events) for r in fake.requests] == [500, 500, 200]
    assert fake.acked_seq() == 1200


def test_a_new_lease_gets_its_deadline_from_the_request_send_time(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane, clock: FakeClock
) -> None:
    """start_deadline = monotonic time the request was sent + start_within_s."""
    fake.offer(lease(start_within_s=90.0))
    sent_at = clock.mono
    clock.step = 5.0  # time passes while the request travels
    assert cycle.run_once().new_leases == 1
    [task] = store.active_tasks()
    assert task.record.start_deadline == sent_at + 90.0


def test_want_leases_and_renewals_follow_the_held_leases(
    cycle: SyncCycle, fake: FakeControlPlane
) -> None:
    """With capacity 2 and one lease held, the next sync renews it and wants one more."""
    fake.offer(lease("t1"))
    cycle.run_once()
    cycle.run_once()
    first, second = fake.requests
    assert first.want_leases == 2 and first.renewals == []
    assert second.want_leases == 1
    assert [(r.task_id, r.fencing_token) for r in second.renewals] == [("t1", 3)]


def test_a_lease_delivered_twice_is_stored_once(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """Same task and fencing token again (a retried answer) creates no second task."""
    fake.offer(lease("t1"))
    fake.offer(lease("t1"))
    outcome = cycle.run_once()
    assert outcome.new_leases == 1
    assert len(store.active_tasks()) == 1


def test_a_cancellation_drops_a_never_started_task(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """The control plane withdraws an unstarted lease: the task leaves the executor."""
    fake.offer(lease("t1"))
    cycle.run_once()
    fake.cancel("t1", 3)
    assert cycle.run_once().dropped == 1
    assert store.active_tasks() == []
    assert store.run_counts() == {RunState.CANCELLED.value: 1}


def test_an_overloaded_control_plane_is_recorded_and_raised_as_retry_later(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """A 503 keeps the events buffered and records the error for `status`."""
    store.append_event(type="x", payload={}, occurred_at=1.0)
    fake.fail_status = 503
    with pytest.raises(RetryLater):
        cycle.run_once()
    assert store.outbox_depth() == 1
    assert "overloaded" in store.sync_state()["last_error"]


def test_a_lost_lease_drops_the_task_only_if_it_never_started(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """lost_leases: the unstarted task is dropped, the started one keeps running."""
    fake.offer(lease("t1"))
    fake.offer(lease("t2"))
    cycle.run_once()
    started = next(t.run for t in store.active_tasks() if t.run.task_id == "t2")
    store.apply_transition(
        run=replace(started, state=RunState.STARTED, started=True),
        events=[],
        occurred_at=1.0,
        expected_state=RunState.LEASED,
    )
    fake.lose("t1")
    fake.lose("t2")
    assert cycle.run_once().dropped == 1
    assert [t.run.task_id for t in store.active_tasks()] == ["t2"]


def test_no_new_leases_are_asked_for_while_work_cannot_start(
    cycle: SyncCycle, fake: FakeControlPlane
) -> None:
    """With the broker unreachable the agent renews what it holds but wants nothing new."""
    cycle.can_take_leases = lambda: False
    cycle.run_once()
    assert fake.requests[0].want_leases == 0


def test_an_ack_above_the_highest_seq_sent_is_clamped_and_counted(
    cycle: SyncCycle, store: Store, clock: FakeClock
) -> None:
    """Events appended after the request was built survive an ack that claims them."""
    for n in range(3):
        store.append_event(type="x", payload={"n": n}, occurred_at=1.0)
    request = cycle.build_request()
    for n in range(2):
        store.append_event(type="x", payload={"n": 3 + n}, occurred_at=1.0)
    response = SyncResponse(acked_seq=5, server_time=clock.wall())
    cycle.apply_response(response, sent_mono=clock.mono, sent_events=request.events)
    assert store.sequence() == (5, 3)
    assert [e.seq for e in store.pending_events(limit=10)] == [4, 5]
    assert store.counters().get("ack_above_sent") == 1


def test_a_resend_request_below_the_acked_seq_is_surfaced_as_stalled(
    cycle: SyncCycle, store: Store, clock: FakeClock
) -> None:
    """A control plane restored from backup asks for deleted events: counted and shown."""
    for n in range(3):
        store.append_event(type="x", payload={"n": n}, occurred_at=1.0)
    request = cycle.build_request()
    ok = SyncResponse(acked_seq=3, server_time=clock.wall())
    cycle.apply_response(ok, sent_mono=clock.mono, sent_events=request.events)
    restored = SyncResponse(acked_seq=1, resend_from=2, server_time=clock.wall())
    cycle.apply_response(restored, sent_mono=clock.mono, sent_events=[])
    assert cycle.stalled == "stalled: resend_from 2 below acked 3"
    assert store.counters().get("resend_below_acked") == 1
    assert cycle.build_request().heartbeat.links["control_plane"] == cycle.stalled
    cycle.apply_response(ok, sent_mono=clock.mono, sent_events=[])
    assert cycle.stalled is None
