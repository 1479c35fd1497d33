"""An MQTT observer outside the agent and the devices: evidence for invariant checks.

It records every ``cmd`` and ``ack`` on a kitchen's topics, so a test's verdict on duplicate
starts does not rest on the components' own reports.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol import Channel, parse_topic, subscription_for
from simulators.processes import wait_until


@dataclass
class Seen:
    topic: str
    channel: Channel
    device_id: str
    payload: dict[str, Any]


@dataclass
class BusObserver:
    """Everything published on ``brigade/v1/{kitchen}/+/+`` while it ran."""

    messages: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        parts = parse_topic(msg.topic)
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = {"_raw": msg.payload.hex()}
        with self.lock:
            self.messages.append(Seen(msg.topic, parts.channel, parts.device_id, payload))

    def of(self, channel: Channel) -> list[Seen]:
        with self.lock:
            return [m for m in self.messages if m.channel is channel]

    def commands_for(self, task_id: str) -> list[dict[str, Any]]:
        return [m.payload for m in self.of(Channel.CMD) if m.payload.get("task_id") == task_id]


@contextmanager
def observe(host: str, port: int, kitchen_id: str) -> Iterator[BusObserver]:
    """Subscribe to a kitchen's whole topic tree until the block ends."""
    observer = BusObserver()
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"observer-{kitchen_id}", protocol=mqtt.MQTTv5
    )
    client.on_message = observer.on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(subscription_for(kitchen_id), qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        wait_until(subscribed.is_set, timeout=10, what="observer subscription")
        yield observer
    finally:
        client.disconnect()
        client.loop_stop()
