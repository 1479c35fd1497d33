"""An independent invariant checker: duplicate starts and lost events from outside evidence.

The verdict of a scenario must not rest on what the agent or the control plane say about
themselves. The evidence here is:

* the kitchen bus, recorded by :class:`BusRecorder` (its own MQTT client with a persistent
  session): every ``cmd`` the agent sent and every ``ack`` a device answered, device events
  (alarms) and telemetry;
* the staff simulation's own record of the manual steps it confirmed;
* the client's record of the orders the control plane answered ``201``;
* the control plane's operators' API at the end of the run (``/v1/orders``, ``/v1/tasks``).

A **start** is a device accepting a batch: an ``accepted`` or ``done`` ack for a command id that
the device did not later answer ``rejected`` or ``expired`` (a dead element gives the batch up,
and the agent may retry it elsewhere). Re-sending the *same* command id is not a start: devices
dedupe it. So a **duplicate start** is a second effective (device, command id) for the same task
and step, in any kitchen. A **lost event** is a fact the kitchen evidently produced that the
control plane does not know after the drain: a batch started on the bus whose task the API still
shows ``planned``/``leased``, a final step done on the bus whose task is not ``done``/``failed``,
or an order answered ``201`` that the API does not have.

The checks are pure functions over plain records (unit-tested); the recorder is the adapter.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import Channel, TopicError, parse_topic

STARTED_RESULTS = ("accepted", "done")
GAVE_UP_RESULTS = ("rejected", "expired")
NOT_STARTED_STATES = ("planned", "leased")
FINISHED_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class CommandSeen:
    kitchen_id: str
    device_id: str
    command_id: str
    task_id: str | None
    step: int | None
    at: float


@dataclass(frozen=True, slots=True)
class AckSeen:
    kitchen_id: str
    device_id: str
    command_id: str
    result: str
    reason: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A manual step confirmed by staff (from the staff simulation's own record)."""

    task_id: str
    step: int


def task_step_of(command_id: str) -> tuple[str, int] | None:
    """``(task_id, step)`` of a derived command id ``{task}.s{step}.a{attempt}``.

    >>> task_step_of("t-42.s1.a2")
    ('t-42', 1)
    >>> task_step_of("manual-thing") is None
    True
    """
    head, sep, attempt = command_id.rpartition(".a")
    task, sep2, step = head.rpartition(".s")
    if not (sep and sep2 and step.isdigit() and attempt.isdigit() and task):
        return None
    return task, int(step)


def effective_starts(
    commands: Iterable[CommandSeen], acks: Iterable[AckSeen]
) -> dict[tuple[str, int], set[tuple[str, str, str]]]:
    """For each ``(task, step)``: the ``(kitchen, device, command id)`` batches that started
    and were not given up."""
    where: dict[str, tuple[str, int]] = {}
    for command in commands:
        if command.task_id is not None and command.step is not None:
            where[command.command_id] = (command.task_id, command.step)
    results: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for ack in acks:
        results[(ack.kitchen_id, ack.device_id, ack.command_id)].add(ack.result)
    starts: dict[tuple[str, int], set[tuple[str, str, str]]] = defaultdict(set)
    for batch, seen in results.items():
        if not seen & set(STARTED_RESULTS) or seen & set(GAVE_UP_RESULTS):
            continue
        key = where.get(batch[2]) or task_step_of(batch[2])
        if key is not None:
            starts[key].add(batch)
    return starts


def duplicate_starts(
    commands: Iterable[CommandSeen], acks: Iterable[AckSeen]
) -> list[dict[str, Any]]:
    """Every task step that more than one batch started, with the batches."""
    found = []
    for (task_id, step), batches in sorted(effective_starts(commands, acks).items()):
        if len(batches) > 1:
            found.append(
                {
                    "task_id": task_id,
                    "step": step,
                    "batches": [
                        {"kitchen": k, "device": d, "command_id": c} for k, d, c in sorted(batches)
                    ],
                }
            )
    return found


def lost_events(
    *,
    commands: Iterable[CommandSeen],
    acks: Iterable[AckSeen],
    confirmations: Iterable[Confirmation],
    final_steps: dict[str, int],
    api_tasks: dict[str, dict[str, Any]],
    accepted_order_ids: Iterable[str],
    api_order_ids: Iterable[str],
) -> list[dict[str, Any]]:
    """Facts the kitchen evidently produced that the control plane does not have.

    ``final_steps`` maps a task id to the index of its recipe's last step; ``api_tasks`` maps
    task ids to the API's view of them at the end of the run.
    """
    commands, acks = list(commands), list(acks)
    started: set[str] = {task for task, _ in effective_starts(commands, acks)}
    finished: set[str] = set()
    for (task, step), _batches in effective_starts(commands, acks).items():
        done = any(a.result == "done" and task_step_of(a.command_id) == (task, step) for a in acks)
        if done and final_steps.get(task) == step:
            finished.add(task)
    for confirmation in confirmations:
        started.add(confirmation.task_id)
        if final_steps.get(confirmation.task_id) == confirmation.step:
            finished.add(confirmation.task_id)
    lost: list[dict[str, Any]] = []
    for task in sorted(started):
        view = api_tasks.get(task)
        if view is None:
            lost.append({"what": "task_unknown", "task_id": task})
        elif view.get("state") in NOT_STARTED_STATES:
            lost.append({"what": "start_lost", "task_id": task, "api_state": view["state"]})
        elif task in finished and view.get("state") not in FINISHED_STATES:
            lost.append({"what": "done_lost", "task_id": task, "api_state": view.get("state")})
    known = set(api_order_ids)
    lost.extend(
        {"what": "order_lost", "order_id": order_id}
        for order_id in sorted(set(accepted_order_ids) - known)
    )
    return lost


@dataclass
class TemperatureSample:
    kitchen_id: str
    device_id: str
    metric: str
    value: float
    at: float


@dataclass
class BusRecorder:
    """Records every cmd and ack (and events, telemetry) on ``brigade/v1/#`` of one broker.

    Its client id is stable and its session persistent (clean start off), so QoS 1 messages
    published while it was cut off by a broker restart are delivered when it reconnects.
    """

    host: str
    port: int
    name: str = "invariant-observer"
    commands: list[CommandSeen] = field(default_factory=list)
    acks: list[AckSeen] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    temperatures: list[TemperatureSample] = field(default_factory=list)
    undecodable: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribed: threading.Event = field(default_factory=threading.Event)
    _client: mqtt.Client | None = None

    def start(self, timeout: float = 10.0) -> BusRecorder:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.name, protocol=mqtt.MQTTv5)
        client.on_connect = lambda c, *_a: c.subscribe("brigade/v1/#", qos=1)
        client.on_subscribe = lambda *_a: self._subscribed.set()
        client.on_message = self._on_message
        session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        session.SessionExpiryInterval = 3600
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.connect(self.host, self.port, clean_start=False, properties=session)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"{self.name}: no subscription within {timeout}s")
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            parts = parse_topic(message.topic)
            payload = json.loads(message.payload)
        except (TopicError, ValueError):
            with self._lock:
                self.undecodable += 1
            return
        if not isinstance(payload, dict):
            return
        now = time.time()
        kitchen, device = parts.kitchen_id, parts.device_id
        with self._lock:
            if parts.channel is Channel.CMD and "command_id" in payload:
                step = payload.get("step")
                self.commands.append(
                    CommandSeen(
                        kitchen,
                        device,
                        str(payload["command_id"]),
                        payload.get("task_id"),
                        step if isinstance(step, int) else None,
                        now,
                    )
                )
            elif parts.channel is Channel.ACK and "command_id" in payload:
                self.acks.append(
                    AckSeen(
                        kitchen,
                        device,
                        str(payload["command_id"]),
                        str(payload.get("result")),
                        payload.get("reason"),
                        now,
                    )
                )
            elif parts.channel is Channel.EVENT:
                self.events.append({"kitchen_id": kitchen, "device_id": device, **payload})
            elif parts.channel is Channel.TELEMETRY:
                for reading in payload.get("readings", []):
                    if isinstance(reading, dict) and isinstance(reading.get("value"), int | float):
                        self.temperatures.append(
                            TemperatureSample(
                                kitchen, device, str(reading.get("metric")), reading["value"], now
                            )
                        )

    def snapshot(self) -> tuple[list[CommandSeen], list[AckSeen], list[dict[str, Any]]]:
        with self._lock:
            return list(self.commands), list(self.acks), list(self.events)
