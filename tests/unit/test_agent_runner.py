"""The executor loop over a real store with a fake broker link: persist first, then command."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent.agent import Executor, persist_confirmation
from edge_agent.executor import ExecutorSettings, RunState
from edge_agent.links.mqtt import Inbound, MqttLink
from edge_agent.store import Store
from protocol import (
    Ack,
    AckResult,
    Channel,
    Command,
    DeviceEvent,
    Lease,
    RecipeStep,
    encode_message,
    topic_for,
)

WALL = 1_767_225_600.0


@dataclass
class FakeClock:
    mono: float = 100.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return WALL + self.mono


@dataclass
class FakeLink:
    """Records commands; checks that task.started was durable when each command went out."""

    store: Store
    connected: bool = True
    sent: list[tuple[str, Command]] = field(default_factory=list)
    started_on_disk_when_sent: list[bool] = field(default_factory=list)

    def publish_command(self, device_id: str, command: Command) -> bool:
        types = [e.type for e in self.store.pending_events(limit=100)]
        self.started_on_disk_when_sent.append("task.started" in types)
        self.sent.append((device_id, command))
        return self.connected


def lease(task_id: str) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id="k1",
        station_id="s1",
        sku_id="pie",
        sku_name="Pie",
        quantity=2,
        order_ids=["o1"],
        steps=[RecipeStep(index=0, name="bake", equipment_kind="oven", duration_s=10)],
        fencing_token=1,
        start_after=0,
        finish_by=2e9,
        start_by=2e9,
        start_within_s=60,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


def executor_for(store: Store, clock: FakeClock, link: FakeLink | None = None) -> Executor:
    return Executor(
        store=store,
        link=link or FakeLink(store),
        settings=ExecutorSettings(ack_wait_s=2.0, step_margin_s=5.0),
        clock=clock,
    )


def add(store: Store, task_id: str, clock: FakeClock) -> None:
    store.add_lease(
        lease=lease(task_id),
        received_at=WALL,
        start_deadline_mono=clock.mono + 60,
        not_before_mono=0.0,
    )


OVEN: dict[str, tuple[str, ...]] = {"oven": ("oven-1",)}


def test_task_started_is_on_disk_before_the_first_command_is_published(store: Store) -> None:
    """When publish_command is called, task.started is already in the outbox."""
    clock = FakeClock()
    link = FakeLink(store)
    add(store, "t1", clock)
    executor_for(store, clock, link).step(None, OVEN)
    assert [c.command_id for _, c in link.sent] == ["t1.s0.a1"]
    assert link.started_on_disk_when_sent == [True]


def test_two_tasks_never_claim_the_same_oven_in_one_pass(store: Store) -> None:
    """One oven, two leases: one starts, the other waits until the oven is free again."""
    clock = FakeClock()
    link = FakeLink(store)
    add(store, "t1", clock)
    add(store, "t2", clock)
    executor = executor_for(store, clock, link)
    executor.step(None, OVEN)
    assert [c.task_id for _, c in link.sent] == ["t1"]
    assert store.run_counts() == {"started": 1, "leased": 1}
    done = Ack(command_id="t1.s0.a1", device_id="oven-1", result=AckResult.DONE, ts=WALL)
    executor.step(done, OVEN)
    assert [c.task_id for _, c in link.sent] == ["t1", "t2"]


def test_a_restarted_executor_resends_the_persisted_command_id(store: Store) -> None:
    """A fresh executor (process restart) re-sends t1.s0.a1 and records no second start."""
    clock = FakeClock()
    add(store, "t1", clock)
    executor_for(store, clock).step(None, OVEN)
    link = FakeLink(store)
    executor_for(store, clock, link).step(None, OVEN)
    assert [c.command_id for _, c in link.sent] == ["t1.s0.a1"]
    types = [e.type for e in store.pending_events(limit=100)]
    assert types.count("task.started") == 1


def test_nothing_starts_while_the_broker_link_is_down(store: Store) -> None:
    """No broker, no devices: the lease waits (and is released at its deadline)."""
    clock = FakeClock()
    link = FakeLink(store, connected=False)
    add(store, "t1", clock)
    executor = executor_for(store, clock, link)
    executor.step(None, OVEN)
    assert link.sent == []
    clock.mono += 61
    executor.step(None, OVEN)
    assert store.run_counts() == {RunState.RELEASED.value: 1}
    assert [e.type for e in store.pending_events(limit=10)] == ["task.released"]


def test_a_staff_confirmation_is_persisted_on_ingest_and_counts_before_the_step_waits(
    store: Store,
) -> None:
    """step_confirmed goes to disk in the MQTT path (inbox full) and before the task started;
    the executor still finishes the manual step from the store."""
    clock = FakeClock()
    full: queue.Queue[Inbound] = queue.Queue(maxsize=1)
    full.put_nowait(Ack(command_id="x", device_id="oven-1", result=AckResult.DONE, ts=WALL))
    link = MqttLink(
        agent_id="a1",
        kitchen_id="k1",
        host="127.0.0.1",
        port=1,
        inbox=full,
        confirm=lambda event: persist_confirmation(store, clock, event),
    )
    event = DeviceEvent(
        device_id="kds-1",
        seq=1,
        ts=WALL,
        event="step_confirmed",
        data={"task_id": "t1", "step": 0, "badge": "badge-7"},
    )
    link.handle_message(topic_for("k1", "kds-1", Channel.EVENT), encode_message(event))
    assert link.drops.counts().get("inbox_full") == 1
    manual = lease("t1").model_copy(
        update={"steps": [RecipeStep(index=0, name="plate", manual=True, duration_s=30)]}
    )
    store.add_lease(
        lease=manual, received_at=WALL, start_deadline_mono=clock.mono + 60, not_before_mono=0.0
    )
    executor = executor_for(store, clock)
    executor.step(None, {})  # starts the task: the manual step is announced
    executor.step(None, {})  # the persisted confirmation completes it
    assert store.run_counts() == {"done": 1}
    done = [e for e in store.pending_events(limit=100) if e.type == "task.step_done"]
    assert done[0].payload["staff_badge"] == "badge-7"
