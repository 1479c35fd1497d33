"""A simulated device on a real Mosquitto: announce, cook, dedupe, clean stop, Last Will."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol import Ack, Birth, State, Status, decode_message
from simulators.broker import Broker
from simulators.devices import SimulatedDevice
from simulators.processes import ManagedProcess, wait_until

KITCHEN = "k1"
REPO = Path(__file__).resolve().parents[2]
#: Fast enough that a preheat plus a 60 s cook takes well under a second of wall time.
FAST = 2000.0


class Observer:
    """A test client subscribed to the kitchen's whole topic tree, recording what arrives."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"brigade/v1/{KITCHEN}/+/+", qos=1)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("observer was not subscribed within 10 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, device_id: str, channel: str) -> list[tuple[bytes, bool]]:
        topic = f"brigade/v1/{KITCHEN}/{device_id}/{channel}"
        with self._lock:
            return [(payload, retain) for t, payload, retain in self.messages if t == topic]

    def acks(self, device_id: str) -> list[Ack]:
        return [decode_message(Ack, payload) for payload, _ in self.on(device_id, "ack")]

    def statuses(self, device_id: str) -> list[Status]:
        return [decode_message(Status, payload) for payload, _ in self.on(device_id, "status")]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        wait_until(condition, timeout=timeout, what=what)

    def command(self, device_id: str, command_id: str, action: str, **params: float) -> bytes:
        now = time.time()
        payload = json.dumps(
            {
                "v": "1.0",
                "command_id": command_id,
                "action": action,
                "params": params,
                "issued_at": now,
                "expires_at": now + 30,
                "task_id": "t-1",
                "step": 0,
            }
        ).encode()
        self.send(device_id, payload)
        return payload

    def send(self, device_id: str, payload: bytes) -> None:
        info = self.client.publish(f"brigade/v1/{KITCHEN}/{device_id}/cmd", payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    watcher = Observer(broker.port)
    try:
        yield watcher
    finally:
        watcher.close()


def oven(broker: Broker, device_id: str = "oven-1") -> SimulatedDevice:
    return SimulatedDevice("oven", KITCHEN, device_id, mqtt_port=broker.port, time_scale=FAST)


def test_a_late_subscriber_finds_retained_birth_status_and_state(
    broker: Broker, observer: Observer
) -> None:
    """Birth, status online and state are retained, so a subscriber arriving later gets them."""
    with oven(broker):
        observer.wait_for(
            lambda: all(observer.on("oven-1", c) for c in ("birth", "status", "state")),
            "the announcement at the broker",
        )
        late = Observer(broker.port)
        try:
            late.wait_for(
                lambda: all(late.on("oven-1", c) for c in ("birth", "status", "state")),
                "retained birth, status and state",
            )
            for channel in ("birth", "status", "state"):
                assert all(retain for _, retain in late.on("oven-1", channel))
            birth = decode_message(Birth, late.on("oven-1", "birth")[0][0])
            assert (birth.kind, "cook") == ("oven", birth.capabilities[0])
            assert late.statuses("oven-1")[0].state == "online"
            assert decode_message(State, late.on("oven-1", "state")[-1][0]).mode == "idle"
        finally:
            late.close()


def test_a_cook_command_is_accepted_then_done_with_the_core_temperature(
    broker: Broker, observer: Observer
) -> None:
    """cook over MQTT: ack accepted, then ack done carrying core_temp_c, within a few seconds."""
    with oven(broker):
        observer.command("oven-1", "t-1.s0.a1", "cook", setpoint_c=180, duration_s=60)
        observer.wait_for(
            lambda: [a.result for a in observer.acks("oven-1")] == ["accepted", "done"],
            "accepted then done",
        )
    done = observer.acks("oven-1")[-1]
    assert done.command_id == "t-1.s0.a1"
    assert isinstance(done.data["core_temp_c"], float)
    modes = [decode_message(State, p).mode.value for p, _ in observer.on("oven-1", "state")]
    assert {"preheating", "cooking"} <= set(modes)


def test_a_repeated_command_id_gets_the_same_ack_again_over_mqtt(
    broker: Broker, observer: Observer
) -> None:
    """Redelivering a finished cook re-sends the identical done ack and starts nothing."""
    with oven(broker):
        payload = observer.command("oven-1", "t-2.s0.a1", "cook", setpoint_c=160, duration_s=30)
        observer.wait_for(lambda: len(observer.acks("oven-1")) == 2, "accepted and done")
        states_before = len(observer.on("oven-1", "state"))
        observer.send("oven-1", payload)
        observer.wait_for(lambda: len(observer.acks("oven-1")) == 3, "the re-sent ack")
        acks = observer.on("oven-1", "ack")
        assert acks[2][0] == acks[1][0]
        modes = [decode_message(State, p).mode for p, _ in observer.on("oven-1", "state")]
        assert "preheating" not in {m.value for m in modes[states_before:]}


def test_a_clean_stop_leaves_a_retained_offline_published_by_the_device(broker: Broker) -> None:
    """After stop(), the retained status is the device's own offline (with ts), not the Will."""
    oven(broker).start().stop()
    late = Observer(broker.port)
    try:
        late.wait_for(lambda: bool(late.on("oven-1", "status")), "retained status")
        status = late.statuses("oven-1")[-1]
        assert status.state == "offline"
        assert status.ts is not None
    finally:
        late.close()


def test_losing_the_connection_uncleanly_fires_the_last_will_then_it_reconnects(
    broker: Broker, observer: Observer
) -> None:
    """A cut link: the broker publishes the Will (offline, no ts); the device comes back online."""
    with oven(broker) as device:
        observer.wait_for(lambda: bool(observer.statuses("oven-1")), "online")
        device.drop_connection()
        observer.wait_for(
            lambda: any(s.state == "offline" for s in observer.statuses("oven-1")), "the Will"
        )
        will = next(s for s in observer.statuses("oven-1") if s.state == "offline")
        assert will.ts is None
        observer.wait_for(lambda: observer.statuses("oven-1")[-1].state == "online", "online again")
        assert device.connections == 2


def test_a_killed_device_process_leaves_the_last_will_offline(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    """brigade-sim device killed with SIGKILL: the retained status becomes the Will."""
    process = ManagedProcess(
        "device",
        [
            sys.executable,
            "-m",
            "simulators.cli",
            "device",
            "--kind",
            "fridge",
            "--kitchen",
            KITCHEN,
            "--id",
            "fridge-1",
            "--mqtt-port",
            str(broker.port),
        ],
        cwd=REPO,
        log_path=tmp_path / "device.log",
    )
    process.start()
    try:
        observer.wait_for(
            lambda: any(s.state == "online" for s in observer.statuses("fridge-1")),
            "the device process online",
            timeout=20,
        )
        process.kill()
        observer.wait_for(lambda: observer.statuses("fridge-1")[-1].state == "offline", "the Will")
        assert observer.statuses("fridge-1")[-1].ts is None
    finally:
        process.stop()


def test_the_device_command_stops_cleanly_on_sigterm(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    """SIGTERM: the process exits 0 after publishing its own offline (with ts)."""
    process = ManagedProcess(
        "device",
        [
            sys.executable,
            "-m",
            "simulators.cli",
            "device",
            "--kind",
            "fryer",
            "--kitchen",
            KITCHEN,
            "--id",
            "fryer-1",
            "--mqtt-port",
            str(broker.port),
        ],
        cwd=REPO,
        log_path=tmp_path / "device.log",
    )
    process.start()
    try:
        observer.wait_for(
            lambda: any(s.state == "online" for s in observer.statuses("fryer-1")),
            "the device process online",
            timeout=20,
        )
        assert process.stop() == 0, process.log_tail()
        observer.wait_for(lambda: observer.statuses("fryer-1")[-1].state == "offline", "offline")
        assert observer.statuses("fryer-1")[-1].ts is not None
    finally:
        process.stop()


def test_a_command_sent_while_the_device_was_away_is_delivered_from_its_session(
    broker: Broker, observer: Observer
) -> None:
    """The stable client id and persistent session queue QoS 1 commands for a stopped device."""
    oven(broker).start().stop()
    observer.command("oven-1", "t-3.s0.a1", "cook", setpoint_c=150, duration_s=10)
    with oven(broker):
        observer.wait_for(
            lambda: [a.result for a in observer.acks("oven-1")] == ["accepted", "done"],
            "the queued command answered",
        )


def test_the_device_reconnects_after_a_broker_restart_and_keeps_answering(
    broker: Broker, observer: Observer
) -> None:
    """Broker restarted: the device announces itself again and still cooks."""
    with oven(broker) as device:
        observer.close()
        broker.restart()
        again = Observer(broker.port)
        try:
            again.wait_for(lambda: device.connections >= 2, "a reconnection")
            again.wait_for(lambda: again.statuses("oven-1")[-1].state == "online", "status online")
            again.command("oven-1", "t-4.s0.a1", "cook", setpoint_c=170, duration_s=10)
            again.wait_for(
                lambda: [a.result for a in again.acks("oven-1")] == ["accepted", "done"],
                "accepted then done after the restart",
            )
        finally:
            again.close()


def test_a_device_started_before_its_broker_connects_once_the_broker_is_up(
    broker: Broker,
) -> None:
    """No broker at start: the device keeps retrying with backoff and comes online later."""
    broker.stop()
    device = oven(broker).start(wait=False)
    try:
        assert not device.online.wait(0.3)
        broker.start()
        assert device.online.wait(10), "the device did not connect after the broker started"
        assert device.connections == 1
    finally:
        device.stop()
