"""Fault tests of the agent on real parts: Mosquitto, SQLite, agent processes, a TCP fault proxy.

Invariants are checked on independent evidence: the bus observer (tests/observer.py) for the
commands that went out, the fake control plane for the events that arrived.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, save_config
from edge_agent.testing import FakeControlPlane
from protocol import Channel, Lease, RecipeStep
from simulators.broker import Broker
from simulators.chaos import FaultProxy
from simulators.processes import ManagedProcess, wait_until
from tests.conftest import chaos_count, soak_timeout
from tests.fixtures_agent import CookingOven
from tests.integration.test_agent_mqtt import birth, device_client, publish, status
from tests.observer import BusObserver, observe

KITCHEN = "k1"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TWO_OVEN_STEPS = (
    RecipeStep(index=0, name="sear", equipment_kind="oven", setpoint_c=220, duration_s=0.4),
    RecipeStep(
        index=1,
        name="bake",
        equipment_kind="oven",
        setpoint_c=180,
        duration_s=0.4,
        min_core_temp_c=74,
    ),
)
TASK_STORY = [
    "task.started",
    "task.step_started",
    "task.step_done",
    "task.step_started",
    "task.step_done",
    "task.done",
]


def lease(task_id: str, *, start_within_s: float = 120.0) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id=KITCHEN,
        station_id="hot-line",
        sku_id="pie",
        sku_name="Chicken pie",
        quantity=4,
        order_ids=[f"order-{task_id}"],
        steps=list(TWO_OVEN_STEPS),
        fencing_token=1,
        start_after=0,
        finish_by=time.time() + 3600,
        start_by=time.time() + start_within_s,
        start_within_s=start_within_s,
    )


def config_for(
    tmp_path: Path, broker: Broker, url: str, fake: FakeControlPlane, **extra: object
) -> AgentConfig:
    return AgentConfig(
        agent_id=fake.agent_id,
        kitchen_id=KITCHEN,
        credential=fake.credential,
        control_plane_url=url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        data_dir=tmp_path,
        sync_interval_s=0.2,
        ack_wait_s=1.0,
        step_margin_s=5.0,
        metrics_port=None,
        safety_tick_s=0.2,
        ingest_flush_s=0.05,
        **extra,
    )


@contextmanager
def agent_in_thread(config: AgentConfig, **kwargs: object) -> Iterator[Agent]:
    agent = Agent(config, **kwargs)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="agent-under-test")
    thread.start()
    try:
        wait_until(
            lambda: agent.ready.is_set() or not thread.is_alive(), timeout=30, what="agent up"
        )
        assert agent.ready.is_set(), "the agent did not start"
        yield agent
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "agent did not stop within 30 s"


def assert_task_story_once(fake: FakeControlPlane, bus: BusObserver, task_id: str) -> None:
    """Each fact once, in order; only the first attempt's command ids; seq gap-free."""
    assert fake.event_types(task_id) == TASK_STORY
    commands = {c["command_id"] for c in bus.commands_for(task_id)}
    assert commands == {f"{task_id}.s0.a1", f"{task_id}.s1.a1"}
    assert sorted(fake.events) == list(range(1, len(fake.events) + 1))
    assert len({e.event_id for e in fake.events.values()}) == len(fake.events)


@pytest.mark.soak
@pytest.mark.timeout(soak_timeout(default=4, per_trial_s=20))
def test_kill_9_at_random_points_never_starts_twice_loses_or_duplicates_an_event(
    tmp_path: Path, broker: Broker
) -> None:
    """Per trial a fresh agent process is SIGKILLed twice at random instants of a two-step
    task's life and restarted: the task completes once under its first command ids."""
    rng = random.Random(int(os.environ.get("BRIGADE_CHAOS_SEED", "20261122")))
    oven = CookingOven(broker.host, broker.port, kitchen_id=KITCHEN, cook_s=0.4)
    try:
        with observe(broker.host, broker.port, KITCHEN) as bus:
            for trial in range(chaos_count(4)):
                task_id = f"task-{trial}"
                fake = FakeControlPlane(kitchen_id=KITCHEN, agent_id=f"agent-{trial}")
                fake.offer(lease(task_id))
                with fake.serve() as url:
                    path = tmp_path / f"trial-{trial}" / "agent.json"
                    save_config(config_for(path.parent / "data", broker, url, fake), path)
                    process = ManagedProcess(
                        f"brigade-agent-{trial}",
                        [str(BIN / "brigade-agent"), "run", "--config", str(path)],
                        log_path=path.parent / "agent.log",
                        env={**os.environ, "PYTHONPATH": str(REPO)},
                    )
                    try:
                        process.start()
                        for _kill in range(2):
                            # The kill instant is the test's input, not a synchronisation.
                            threading.Event().wait(rng.uniform(0.3, 3.0))
                            process.kill()
                            process.start()
                        wait_until(
                            lambda task_id=task_id, fake=fake: (
                                "task.done"  # type: ignore[misc]
                                in fake.event_types(task_id)
                            ),
                            timeout=60,
                            what=f"{task_id} done after kills\n{process.log_tail()}",
                        )
                    finally:
                        process.stop()
                assert_task_story_once(fake, bus, task_id)
    finally:
        oven.close()


def test_leased_tasks_and_alerts_go_on_through_a_blackholed_control_plane(
    tmp_path: Path, broker: Broker
) -> None:
    """The control plane behind a proxy that blackholes it: both leased tasks run to the end and
    a fridge breach alert is raised locally; after the heal every event arrives, gap-free, in
    recording order."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-a"))
    fake.offer(lease("task-b"))
    oven = CookingOven(broker.host, broker.port, kitchen_id=KITCHEN, cook_s=0.3)
    oven.hold()
    try:
        with (
            fake.serve() as url,
            FaultProxy(target_port=int(url.rsplit(":", 1)[1])) as proxy,
            observe(broker.host, broker.port, KITCHEN) as bus,
            device_client(broker, "fridge") as fridge,
        ):
            config = config_for(
                tmp_path,
                broker,
                f"http://127.0.0.1:{proxy.port}",
                fake,
                safety_overrides={"fridge-1": {"breach_delay_s": 0.5, "alarm_delay_s": 3600}},
            )
            with agent_in_thread(config) as agent:
                wait_until(lambda: bool(oven.received), timeout=30, what="the first command")
                proxy.set_mode("blackhole")
                oven.release()
                publish(fridge, "fridge-1", Channel.BIRTH, birth("fridge-1", "fridge"), retain=True)
                publish(fridge, "fridge-1", Channel.STATUS, status("online"), retain=True)
                for seq in range(1, 8):
                    publish(fridge, "fridge-1", Channel.TELEMETRY, fridge_reading(seq, 9.0))
                    threading.Event().wait(0.1)  # readings spread over time, as a probe's are
                store = agent.store
                assert store is not None
                wait_until(
                    lambda: (
                        store.run_counts().get("done") == 2
                        and any(a["kind"] == "cold_holding_breach" for a in store.alerts())
                    ),
                    timeout=40,
                    what="both tasks done and the alert raised while partitioned",
                )
                cut_off = set(fake.events)
                proxy.set_mode("pass")
                wait_until(
                    lambda: (
                        fake.event_types("task-b")[-1:] == ["task.done"]
                        and fake.event_types("task-a")[-1:] == ["task.done"]
                        and "alert.raised" in fake.event_types()
                    ),
                    timeout=60,
                    what="the drain after the heal",
                )
            assert_task_story_once(fake, bus, "task-a")
            assert_task_story_once(fake, bus, "task-b")
    finally:
        oven.close()
    assert not any(fake.events[s].type == "task.done" for s in cut_off)
    # Recording order is seq order: the first start, recorded before the partition, precedes
    # the alert raised during it.
    alert_seq = next(s for s, e in fake.events.items() if e.type == "alert.raised")
    assert min(s for s, e in fake.events.items() if e.type == "task.started") < alert_seq


def test_a_broker_crash_mid_cook_loses_no_qos1_ack_and_starts_nothing_twice(
    tmp_path: Path, broker: Broker
) -> None:
    """Mosquitto SIGKILLed while the oven cooks; the oven's done acks are published while it
    is down; after the restart they reach the agent and the task completes once."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-m"))
    oven = CookingOven(broker.host, broker.port, kitchen_id=KITCHEN, cook_s=0.2)
    oven.hold()
    try:
        with observe(broker.host, broker.port, KITCHEN) as bus:
            config = config_for(tmp_path, broker, "http://cp", fake)
            with agent_in_thread(config, transport=fake.transport()) as agent:
                wait_until(lambda: bool(oven.received), timeout=30, what="the first command")
                wait_until(lambda: bool(oven._pending), timeout=10, what="the oven to cook")
                broker.kill()
                oven.release()  # acks published into a dead connection: queued at QoS 1
                broker.start()
                wait_until(
                    lambda: "task.done" in fake.event_types("task-m"),
                    timeout=60,
                    what="task.done after the broker restart",
                )
                assert agent.link is not None and agent.link.connections >= 2
            # The observer reconnected too; it saw every command sent after the restart.
            assert fake.event_types("task-m") == TASK_STORY
            assert {c["command_id"] for c in bus.commands_for("task-m")} <= {
                "task-m.s0.a1",
                "task-m.s1.a1",
            }
            assert set(oven.received) == {"task-m.s0.a1", "task-m.s1.a1"}
    finally:
        oven.close()


@dataclass
class SkewedClock:
    """The system clocks, with the wall clock off by ``skew_s`` (changeable mid-run)."""

    skew_s: float

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time() + self.skew_s


@pytest.mark.parametrize("skew_s", [600.0, -600.0])
def test_a_skewed_wall_clock_neither_extends_a_lease_nor_reorders_events(
    tmp_path: Path, broker: Broker, skew_s: float
) -> None:
    """Wall clock ±10 min off (and jumping to the opposite skew mid-run): a 1.5 s start-by is
    enforced on the monotonic clock, and seq order stays recording order."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-late", start_within_s=1.5))
    clock = SkewedClock(skew_s)
    config = config_for(tmp_path, broker, "http://cp", fake)
    with agent_in_thread(config, transport=fake.transport(), clock=clock):
        started = time.monotonic()
        wait_until(lambda: "task.released" in fake.event_types("task-late"), timeout=20)
        released_after = time.monotonic() - started
        oven = CookingOven(broker.host, broker.port, kitchen_id=KITCHEN, cook_s=0.3)
        try:
            fake.offer(lease("task-on-time"))
            wait_until(lambda: "task.step_done" in fake.event_types("task-on-time"), timeout=30)
            clock.skew_s = -skew_s  # an NTP step in the middle of the task
            wait_until(lambda: "task.done" in fake.event_types("task-on-time"), timeout=30)
        finally:
            oven.close()
    assert released_after < 10.0
    assert fake.event_types("task-late") == ["task.released"]
    assert fake.event_types("task-on-time") == TASK_STORY
    assert sorted(fake.events) == list(range(1, len(fake.events) + 1))


def test_with_the_disk_budget_exhausted_alerts_and_task_events_are_still_recorded(
    tmp_path: Path, broker: Broker
) -> None:
    """A budget far below the store's size: telemetry is compacted and dropped (counted), a task
    runs to done and a breach alert is raised and delivered."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-d"))
    oven = CookingOven(broker.host, broker.port, kitchen_id=KITCHEN, cook_s=0.2)
    config = config_for(
        tmp_path,
        broker,
        "http://cp",
        fake,
        disk_budget_mb=0.01,
        readings_window_s=0.05,
        forward_readings=False,  # summaries pile up locally, as they do while partitioned
        safety_overrides={"fridge-1": {"breach_delay_s": 0.3, "alarm_delay_s": 3600}},
    )
    try:
        with (
            agent_in_thread(config, transport=fake.transport()) as agent,
            device_client(broker, "fridge") as fridge,
        ):
            publish(fridge, "fridge-1", Channel.BIRTH, birth("fridge-1", "fridge"), retain=True)
            for seq in range(1, 40):
                publish(fridge, "fridge-1", Channel.TELEMETRY, fridge_reading(seq, 9.0))
            store = agent.store
            assert store is not None
            wait_until(
                lambda: (
                    "task.done" in fake.event_types("task-d")
                    and "alert.raised" in fake.event_types()
                ),
                timeout=40,
                what="task.done and the alert at the control plane",
            )
            store.enforce_disk_budget(budget_bytes=int(0.01 * 1024 * 1024))
            shed = store.counters()
    finally:
        oven.close()
    assert shed.get("routine_compacted", 0) + shed.get("routine_dropped", 0) > 0
    assert fake.event_types("task-d") == TASK_STORY
    assert sorted(fake.events) == list(range(1, len(fake.events) + 1))


def fridge_reading(seq: int, value: float) -> bytes:
    return (
        f'{{"v":"1.0","device_id":"fridge-1","seq":{seq},"ts":{time.time()},'
        f'"readings":[{{"metric":"air_temp","value":{value},"unit":"C"}}]}}'
    ).encode()


def test_an_overloaded_control_plane_is_not_asked_again_before_retry_after(
    tmp_path: Path, broker: Broker
) -> None:
    """A real HTTP server answering 429 with Retry-After: 1: the agent's next attempts come
    at least 1 s apart (plus jitter), then sync resumes when the server does."""
    fake = FakeControlPlane(kitchen_id=KITCHEN, fail_status=429, retry_after="1")
    with fake.serve() as url, agent_in_thread(config_for(tmp_path, broker, url, fake)) as agent:
        wait_until(lambda: len(fake.arrivals) >= 3, timeout=20, what="three refused attempts")
        fake.fail_status = None
        wait_until(agent.sync_ok.is_set, timeout=20, what="sync to resume")
        refused = fake.arrivals[:3]
    gaps = [later - earlier for earlier, later in itertools.pairwise(refused)]
    assert all(1.0 <= gap <= 1.5 for gap in gaps), gaps
