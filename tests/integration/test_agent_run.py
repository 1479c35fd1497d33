"""The whole agent against a real Mosquitto, a tiny in-test oven and the fake control plane."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, save_config
from edge_agent.testing import FakeControlPlane
from protocol import (
    Ack,
    AckResult,
    Birth,
    Channel,
    Command,
    DeviceEvent,
    DeviceKind,
    Lease,
    RecipeStep,
    Status,
    encode_message,
    topic_for,
)
from simulators.broker import Broker
from simulators.processes import ManagedProcess, wait_until

KITCHEN = "k1"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class FakeOven:
    """A minimal oven: acks ``accepted`` at once and ``done`` when told to (or at once with
    ``auto_finish``); a repeated command id re-sends its last ack and does nothing else."""

    def __init__(self, broker: Broker, device_id: str = "oven-1", *, auto_finish: bool) -> None:
        self.device_id = device_id
        self.auto_finish = auto_finish
        self.received: list[str] = []
        self.last_ack: dict[str, AckResult] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"oven-{device_id}", protocol=mqtt.MQTTv5
        )
        self._client.will_set(
            self._topic(Channel.STATUS), encode_message(Status(state="offline")), 1, True
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "oven could not subscribe"

    def _topic(self, channel: Channel) -> str:
        return topic_for(KITCHEN, self.device_id, channel)

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe(self._topic(Channel.CMD), qos=1)
        birth = Birth(
            device_id=self.device_id,
            kind=DeviceKind.OVEN,
            model="test",
            firmware="1",
            ts=time.time(),
        )
        client.publish(self._topic(Channel.BIRTH), encode_message(birth), qos=1, retain=True)
        client.publish(
            self._topic(Channel.STATUS), encode_message(Status(state="online")), qos=1, retain=True
        )

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        command = Command.model_validate_json(message.payload)
        with self._lock:
            self.received.append(command.command_id)
            repeated = command.command_id in self.last_ack
        if repeated:
            self._ack(command.command_id, self.last_ack[command.command_id])
            return
        self._ack(command.command_id, AckResult.ACCEPTED)
        if self.auto_finish:
            self._ack(command.command_id, AckResult.DONE)

    def _ack(self, command_id: str, result: AckResult) -> None:
        data = {"core_temp_c": 76.5} if result == AckResult.DONE else {}
        ack = Ack(
            command_id=command_id,
            device_id=self.device_id,
            result=result,
            ts=time.time(),
            data=data,
        )
        with self._lock:
            self.last_ack[command_id] = result
        self._client.publish(self._topic(Channel.ACK), encode_message(ack), qos=1)

    def finish_all(self) -> None:
        """Every accepted command is done now (the oven finished while nobody watched)."""
        with self._lock:
            pending = [c for c, r in self.last_ack.items() if r == AckResult.ACCEPTED]
        for command_id in pending:
            self._ack(command_id, AckResult.DONE)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class CommandObserver:
    """A separate subscriber recording every command the agent publishes in the kitchen, and
    the agent's retained status (``online``, or ``offline`` from its Last Will)."""

    def __init__(self, broker: Broker) -> None:
        self.commands: list[Command] = []
        self.agent_status: list[str] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="observer", protocol=mqtt.MQTTv5
        )
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(
            [
                (f"brigade/v1/{KITCHEN}/+/{Channel.CMD.value}", 1),
                (topic_for(KITCHEN, "agent", Channel.STATUS), 1),
            ]
        )
        self._client.loop_start()
        assert subscribed.wait(10), "observer could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/cmd"):
            self.commands.append(Command.model_validate_json(message.payload))
        else:
            self.agent_status.append(Status.model_validate_json(message.payload).state)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def lease(task_id: str, *steps: RecipeStep, start_within_s: float = 60.0) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id=KITCHEN,
        station_id="hot-line",
        sku_id="pie",
        sku_name="Chicken pie",
        quantity=6,
        order_ids=["order-1"],
        steps=list(steps)
        or [RecipeStep(index=0, name="bake", equipment_kind="oven", setpoint_c=180, duration_s=1)],
        fencing_token=1,
        start_after=0,
        finish_by=time.time() + 3600,
        start_by=time.time() + start_within_s,
        start_within_s=start_within_s,
    )


def agent_config(tmp_path: Path, broker: Broker, url: str, fake: FakeControlPlane) -> AgentConfig:
    return AgentConfig(
        agent_id=fake.agent_id,
        kitchen_id=KITCHEN,
        credential=fake.credential,
        control_plane_url=url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        data_dir=tmp_path / "agent-data",
        sync_interval_s=0.2,
        ack_wait_s=1.0,
        step_margin_s=5.0,
    )


@contextmanager
def running_agent(config: AgentConfig, fake: FakeControlPlane) -> Iterator[Agent]:
    """The agent in a thread, using the fake control plane in-process; stopped on exit."""
    agent = Agent(config, transport=fake.transport())
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


@pytest.fixture
def oven(broker: Broker) -> Iterator[FakeOven]:
    device = FakeOven(broker, auto_finish=True)
    yield device
    device.close()


def assert_gap_free(fake: FakeControlPlane) -> None:
    seqs = sorted(fake.events)
    assert seqs == list(range(1, len(seqs) + 1))
    for request in fake.requests:
        assert [e.seq for e in request.events] == sorted(e.seq for e in request.events)


def test_a_leased_task_runs_to_done_with_its_events_in_seq_order(
    tmp_path: Path, broker: Broker, oven: FakeOven
) -> None:
    """Oven step then a badge-confirmed manual step: started, steps, done, synced in order."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(
        lease(
            "task-1",
            RecipeStep(index=0, name="bake", equipment_kind="oven", setpoint_c=180, duration_s=1),
            RecipeStep(index=1, name="box", manual=True, duration_s=30),
        )
    )
    with running_agent(agent_config(tmp_path, broker, "http://cp", fake), fake):
        wait_until(
            lambda: fake.event_types("task-1").count("task.step_started") == 2,
            timeout=30,
            what="the manual step to be announced",
        )
        confirm = DeviceEvent(
            device_id="kds-1",
            seq=1,
            ts=time.time(),
            event="step_confirmed",
            data={"task_id": "task-1", "step": 1, "badge": "badge-17"},
        )
        with device_publisher(broker) as publisher:
            publisher.publish(
                topic_for(KITCHEN, "kds-1", Channel.EVENT), encode_message(confirm), qos=1
            ).wait_for_publish(5)
        wait_until(lambda: "task.done" in fake.event_types("task-1"), timeout=30, what="task.done")
    assert fake.event_types("task-1") == [
        "task.started",
        "task.step_started",
        "task.step_done",
        "task.step_started",
        "task.step_done",
        "task.done",
    ]
    done_steps = [
        e.payload
        for e in sorted(fake.events.values(), key=lambda e: e.seq)
        if e.type == "task.step_done"
    ]
    assert done_steps[0]["core_temp_c"] == 76.5 and done_steps[0]["command_id"] == "task-1.s0.a1"
    assert done_steps[1]["staff_badge"] == "badge-17"
    done = next(e for e in fake.events.values() if e.type == "task.done")
    assert done.payload["quantity"] == 6
    assert_gap_free(fake)
    assert oven.received == ["task-1.s0.a1"]


@contextmanager
def device_publisher(broker: Broker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kds-1", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_lease_that_cannot_start_in_time_is_released_not_started(
    tmp_path: Path, broker: Broker
) -> None:
    """No oven online within start_within_s: task.released start_by_expired, no command."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-2", start_within_s=1.0))
    observer = CommandObserver(broker)
    try:
        with running_agent(agent_config(tmp_path, broker, "http://cp", fake), fake):
            wait_until(
                lambda: "task.released" in fake.event_types("task-2"), timeout=30, what="release"
            )
    finally:
        observer.close()
    assert fake.event_types("task-2") == ["task.released"]
    assert fake.events[1].payload["reason"] == "start_by_expired"
    assert observer.commands == []


def test_the_kitchen_keeps_cooking_while_the_control_plane_is_down_and_drains_after(
    tmp_path: Path, broker: Broker, oven: FakeOven
) -> None:
    """With sync failing (503) the leased task still runs to done; events arrive on recovery."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-3"))
    config = agent_config(tmp_path, broker, "http://cp", fake)
    with running_agent(config, fake):
        wait_until(lambda: bool(oven.received), timeout=30, what="the first command")
        fake.fail_status = 503
        wait_until(lambda: oven.last_ack.get("task-3.s0.a1") == AckResult.DONE, timeout=30)
        fake.fail_status = None
        wait_until(lambda: "task.done" in fake.event_types("task-3"), timeout=30, what="drain")
    assert fake.event_types("task-3")[-1] == "task.done"
    assert_gap_free(fake)


@pytest.mark.parametrize("oven_finishes_while_agent_is_down", [True, False])
def test_a_killed_agent_restarts_and_completes_the_task_once_under_the_same_command_id(
    tmp_path: Path, broker: Broker, oven_finishes_while_agent_is_down: bool
) -> None:
    """SIGKILL mid-cook, restart: one start, one done, one command id for the step, seq gap-free.

    Either the oven's ``done`` waits in the agent's persistent session, or the restarted agent
    re-sends the same command id and the oven re-acks it."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-4"))
    oven = FakeOven(broker, auto_finish=False)
    observer = CommandObserver(broker)
    with fake.serve() as url:
        config_path = tmp_path / "agent.json"
        save_config(agent_config(tmp_path, broker, url, fake), config_path)
        agent = ManagedProcess(
            "brigade-agent",
            [str(BIN / "brigade-agent"), "run", "--config", str(config_path)],
            log_path=tmp_path / "agent.log",
            # The repo first on the path: a stale editable install must not shadow the packages.
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            agent.start()
            wait_until(
                lambda: oven.last_ack.get("task-4.s0.a1") == AckResult.ACCEPTED,
                timeout=30,
                what="the oven to accept the first command",
            )
            agent.kill()
            wait_until(
                lambda: observer.agent_status[-1:] == ["offline"],
                timeout=30,
                what="the agent's Last Will",
            )
            if oven_finishes_while_agent_is_down:
                oven.finish_all()  # the ack is queued in the agent's persistent session
            agent.start()
            if not oven_finishes_while_agent_is_down:
                wait_until(lambda: len(observer.commands) >= 2, timeout=30, what="the re-send")
                oven.finish_all()
            wait_until(
                lambda: "task.done" in fake.event_types("task-4"),
                timeout=30,
                what=f"task.done after restart\n{agent.log_tail()}",
            )
            exit_code = agent.stop()  # SIGTERM: a clean shutdown
            wait_until(lambda: observer.agent_status[-1:] == ["offline"], timeout=10)
        finally:
            agent.stop()
            observer.close()
            oven.close()
    assert exit_code == 0, agent.log_tail()
    types = fake.event_types("task-4")
    assert types.count("task.started") == 1 and types.count("task.done") == 1
    assert types.count("task.step_started") == 1
    assert {c.command_id for c in observer.commands if c.task_id == "task-4"} == {"task-4.s0.a1"}
    assert_gap_free(fake)
