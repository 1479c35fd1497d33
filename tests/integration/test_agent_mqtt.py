"""The agent's MQTT link against a real Mosquitto: registry, drops, commands, persistent session."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.links.mqtt import Inbound, MqttLink
from protocol import Ack, AckResult, Channel, Command, encode_message, topic_for
from protocol.vector_files import load
from simulators.broker import Broker
from simulators.processes import wait_until

KITCHEN = "k1"


@contextmanager
def device_client(
    broker: Broker,
    client_id: str,
    on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
    subscribe: str | None = None,
) -> Iterator[mqtt.Client]:
    """A plain paho client playing a device (or an observer), subscribed to ``subscribe``
    before it is yielded; disconnected on exit."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    subscribed = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.on_subscribe = lambda *args: subscribed.set()
    if on_message is not None:
        client.on_message = lambda _c, _u, message: on_message(message)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(10), "test client could not connect"
        if subscribe is not None:
            client.subscribe(subscribe, qos=1)
            assert subscribed.wait(10), "test client could not subscribe"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish(
    client: mqtt.Client, device: str, channel: Channel, payload: bytes, *, retain: bool = False
) -> None:
    client.publish(
        topic_for(KITCHEN, device, channel), payload, qos=1, retain=retain
    ).wait_for_publish(5)


def birth(device: str, kind: str = "oven") -> bytes:
    return (
        f'{{"v":"1.0","device_id":"{device}","kind":"{kind}","model":"m","firmware":"1",'
        f'"ts":{time.time()}}}'
    ).encode()


def status(state: str) -> bytes:
    return f'{{"v":"1.0","state":"{state}"}}'.encode()


def ack_bytes(command_id: str, device: str = "oven-1", result: str = "done") -> bytes:
    return encode_message(
        Ack(command_id=command_id, device_id=device, result=AckResult(result), ts=time.time())
    )


@contextmanager
def agent_link(broker: Broker, inbox: queue.Queue[Inbound]) -> Iterator[MqttLink]:
    link = MqttLink(
        agent_id="agent-1", kitchen_id=KITCHEN, host=broker.host, port=broker.port, inbox=inbox
    )
    with link:
        assert link.wait_connected(10)
        yield link


def vector_device(raw: bytes) -> str:
    """The device a vector's payload claims to be from (oven-1 if it names none we can use)."""
    try:
        claimed = json.loads(raw).get("device_id", "oven-1")
    except (ValueError, AttributeError):
        return "oven-1"
    return claimed if isinstance(claimed, str) and claimed.replace("-", "").isalnum() else "oven-1"


@pytest.fixture
def inbox() -> queue.Queue[Inbound]:
    return queue.Queue(maxsize=100)


def next_ack(inbox: queue.Queue[Inbound]) -> Ack:
    item = inbox.get(timeout=10)
    assert isinstance(item, Ack)
    return item


def test_the_registry_learns_devices_from_retained_birth_and_status(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """Retained birth/status published before the agent connects are known after; offline too."""
    with device_client(broker, "dev") as device:
        publish(device, "oven-1", Channel.BIRTH, birth("oven-1"), retain=True)
        publish(device, "oven-1", Channel.STATUS, status("online"), retain=True)
        publish(device, "fridge-1", Channel.BIRTH, birth("fridge-1", "fridge"), retain=True)
        publish(device, "fridge-1", Channel.STATUS, status("offline"), retain=True)
        with agent_link(broker, inbox) as link:
            wait_until(lambda: len(link.registry.devices()) == 2, timeout=10, what="registry")
            assert link.registry.online_by_kind() == {"oven": ("oven-1",)}
            publish(device, "oven-1", Channel.STATUS, status("offline"), retain=True)
            wait_until(lambda: link.registry.online_by_kind() == {}, timeout=10, what="offline")
            assert link.registry.devices()["oven-1"].kind == "oven"


def test_malformed_messages_are_dropped_and_counted_by_reason(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """Every invalid shared vector is counted under its reason; a valid ack still gets through."""
    invalid = [v for v in load("mqtt") if not v.valid]
    assert invalid, "the shared vectors have invalid cases"
    with agent_link(broker, inbox) as link, device_client(broker, "dev") as device:
        for vector in invalid:
            # Published on the device the vector names, so only the payload is at fault.
            publish(device, vector_device(vector.raw), Channel(vector.meta["channel"]), vector.raw)
        publish(device, "oven-1", Channel.ACK, b"\xff\xfe not json")
        publish(device, "oven-1", Channel.ACK, ack_bytes("t1.s0.a1"))
        assert next_ack(inbox).command_id == "t1.s0.a1"
        expected: dict[str, int] = {}
        for vector in invalid:
            assert vector.reason is not None
            expected[vector.reason] = expected.get(vector.reason, 0) + 1
        expected["not_json"] = expected.get("not_json", 0) + 1
        assert link.drops.counts() == expected
        assert link.connected


def test_an_ack_naming_another_device_than_its_topic_is_dropped(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """A device cannot ack on behalf of another: counted as device_mismatch."""
    with agent_link(broker, inbox) as link, device_client(broker, "dev") as device:
        publish(device, "oven-1", Channel.ACK, ack_bytes("t1.s0.a1", device="oven-2"))
        wait_until(lambda: link.drops.counts() == {"device_mismatch": 1}, timeout=10)
        assert inbox.empty()


def test_a_command_reaches_the_device_and_its_ack_reaches_the_executor_inbox(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """publish_command goes out at QoS 1 on the device's cmd topic; the ack comes back."""
    received: queue.Queue[Command] = queue.Queue()
    with (
        device_client(
            broker,
            "oven",
            on_message=lambda m: received.put(Command.model_validate_json(m.payload)),
            subscribe=topic_for(KITCHEN, "oven-1", Channel.CMD),
        ) as device,
        agent_link(broker, inbox) as link,
    ):
        command = Command(
            command_id="t1.s0.a1",
            action="cook",
            params={"setpoint_c": 180.0, "duration_s": 1.0},
            issued_at=time.time(),
            expires_at=time.time() + 60,
            task_id="t1",
            step=0,
        )
        wait_until(lambda: link.publish_command("oven-1", command), timeout=10)
        assert received.get(timeout=10) == command
        publish(device, "oven-1", Channel.ACK, ack_bytes("t1.s0.a1", result="accepted"))
        assert next_ack(inbox).result == AckResult.ACCEPTED


def test_the_agent_never_hears_its_own_commands(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """No-local subscription: the agent's cmd publishes do not come back to it."""
    with agent_link(broker, inbox) as link, device_client(broker, "dev") as device:
        command = Command(
            command_id="c1", action="cook", issued_at=time.time(), expires_at=time.time() + 60
        )
        link.publish_command("oven-1", command)
        publish(device, "oven-1", Channel.ACK, ack_bytes("c1"))
        assert next_ack(inbox).command_id == "c1"
        assert inbox.empty()


def test_after_a_broker_restart_the_link_reconnects_and_still_receives_acks(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """Broker restart: the link reconnects by itself (resubscribed) and acks flow again."""
    with agent_link(broker, inbox) as link:
        broker.restart()
        wait_until(lambda: link.connections >= 2 and link.connected, timeout=30, what="reconnect")
        with device_client(broker, "dev") as device:
            publish(device, "oven-1", Channel.ACK, ack_bytes("t1.s0.a1"))
            assert next_ack(inbox).command_id == "t1.s0.a1"


def test_an_ack_published_while_the_agent_was_away_arrives_when_it_returns(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """Persistent session: a QoS 1 ack sent while the agent is down (and the broker restarts)
    is delivered when the agent reconnects."""
    with agent_link(broker, inbox):
        pass
    with device_client(broker, "dev") as device:
        publish(device, "oven-1", Channel.ACK, ack_bytes("t1.s0.a1"))
    broker.restart()
    with agent_link(broker, inbox):
        assert next_ack(inbox).command_id == "t1.s0.a1"


def test_the_agent_status_is_retained_online_then_offline_after_a_clean_stop(
    broker: Broker, inbox: queue.Queue[Inbound]
) -> None:
    """brigade/v1/k1/agent/status: retained online while connected, offline after stop."""
    seen: queue.Queue[bytes] = queue.Queue()
    status_topic = topic_for(KITCHEN, "agent", Channel.STATUS)
    with agent_link(broker, inbox):
        pass
    with device_client(
        broker, "observer", on_message=lambda m: seen.put(bytes(m.payload)), subscribe=status_topic
    ):
        assert b'"offline"' in seen.get(timeout=10)
        with agent_link(broker, inbox):
            assert b'"online"' in seen.get(timeout=10)
