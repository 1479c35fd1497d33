"""Fixtures of the agent tests (registered in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol import (
    Ack,
    AckResult,
    Birth,
    Channel,
    Command,
    DeviceKind,
    Status,
    encode_message,
    topic_for,
)
from simulators.processes import wait_until


class PtyProbe:
    """A probe on a real pseudo-terminal, reachable through a stable path (a symlink, as
    ``/dev/serial/by-id/...`` is) that :meth:`unplug` removes and :meth:`replug` brings back
    on a fresh pty, like a USB probe pulled out and plugged in again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master: int | None = None
        self._received = bytearray()
        self.replug()

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass as they are
        name = os.ttyname(slave)
        os.close(slave)
        self.master = master
        tmp = self.path.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(name)
        tmp.replace(self.path)

    def unplug(self) -> None:
        """The path disappears and the open port hangs up (reads fail with EIO)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def send(self, data: bytes) -> None:
        assert self.master is not None, "probe is unplugged"
        os.write(self.master, data)

    def received(self) -> bytes:
        """Everything the host wrote to the probe so far."""
        while self.master is not None:
            ready, _, _ = select.select([self.master], [], [], 0)
            if not ready:
                break
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self._received += chunk
        return bytes(self._received)

    def close(self) -> None:
        self.unplug()


@pytest.fixture
def pty_probe(tmp_path: Path) -> Iterator[PtyProbe]:
    """A probe on a pty behind ``tmp_path/probe`` (unplug/replug-able); closed at the end."""
    probe = PtyProbe(tmp_path / "probe")
    try:
        yield probe
    finally:
        probe.close()


class ListSink:
    """Collects what a link submits (the ingest loop's seat in link tests)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def submit(self, item: Any) -> bool:
        with self._lock:
            self.items.append(item)
        return True

    def of(self, kind: type) -> list[Any]:
        with self._lock:
            return [i for i in self.items if isinstance(i, kind)]

    def wait_for(self, kind: type, count: int, timeout: float = 10.0) -> list[Any]:
        wait_until(
            lambda: len(self.of(kind)) >= count, timeout=timeout, what=f"{count} {kind.__name__}"
        )
        return self.of(kind)


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


class CookingOven:
    """An oven on a real broker that acks ``accepted`` at once and ``done`` ``cook_s`` later
    (with a core temperature); a repeated command id re-sends its last ack and does nothing
    else, as the protocol requires. ``hold()`` keeps it from finishing until ``release()``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        kitchen_id: str,
        device_id: str = "oven-1",
        cook_s: float = 0.3,
        core_temp_c: float = 76.5,
    ) -> None:
        self.kitchen_id = kitchen_id
        self.device_id = device_id
        self.cook_s = cook_s
        self.core_temp_c = core_temp_c
        self.received: list[str] = []
        self.last_ack: dict[str, AckResult] = {}
        self._held = threading.Event()
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"cooking-{kitchen_id}-{device_id}",
            protocol=mqtt.MQTTv5,
        )
        self._client.will_set(
            self._topic(Channel.STATUS), encode_message(Status(state="offline")), 1, True
        )
        subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        wait_until(subscribed.is_set, timeout=10, what="the oven's subscription")

    def _topic(self, channel: Channel) -> str:
        return topic_for(self.kitchen_id, self.device_id, channel)

    def _on_connect(self, client: mqtt.Client, *_a: object) -> None:
        client.subscribe(self._topic(Channel.CMD), qos=1)
        birth = Birth(
            device_id=self.device_id, kind=DeviceKind.OVEN, model="t", firmware="1", ts=time.time()
        )
        client.publish(self._topic(Channel.BIRTH), encode_message(birth), qos=1, retain=True)
        client.publish(
            self._topic(Channel.STATUS), encode_message(Status(state="online")), qos=1, retain=True
        )

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        command = Command.model_validate_json(message.payload)
        with self._lock:
            self.received.append(command.command_id)
            last = self.last_ack.get(command.command_id)
        if last is not None:
            self._ack(command.command_id, last)
            return
        self._ack(command.command_id, AckResult.ACCEPTED)
        timer = threading.Timer(self.cook_s, self._finish, args=(command.command_id,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _finish(self, command_id: str) -> None:
        if self._held.is_set():
            with self._lock:
                self._pending.append(command_id)
            return
        self._ack(command_id, AckResult.DONE)

    def hold(self) -> None:
        self._held.set()

    def release(self) -> None:
        self._held.clear()
        with self._lock:
            pending, self._pending = self._pending, []
        for command_id in pending:
            self._ack(command_id, AckResult.DONE)

    def _ack(self, command_id: str, result: AckResult) -> None:
        data: dict[str, str | int | float | bool] = (
            {"core_temp_c": self.core_temp_c} if result == AckResult.DONE else {}
        )
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

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._client.disconnect()
        self._client.loop_stop()
