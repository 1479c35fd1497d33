"""Kitchen staff doing the manual steps of recipes: late sometimes, away sometimes.

A manual step is confirmed from a kitchen display or badge reader: a ``DeviceEvent`` with
``event="step_confirmed"`` and ``data={"task_id", "step", "badge"}`` on the display's ``event``
topic (docs/protocol.md). :func:`plan_confirmation` is the pure part (who confirms, and when,
given reaction times and absences); :class:`KitchenStaff` is the thread that watches for manual
steps becoming due and publishes the confirmations.

How staff learn a manual step is due: the agent announces manual steps to the control plane
only (``task.step_started`` in its outbox), not on the kitchen bus, so staff here read started
tasks from the control plane's ``GET /v1/tasks`` and watch the bus for the ``done`` ack of the
step before. A kitchen display fed by the agent itself would keep working offline (see the
report of issue 6).

>>> roster = (StaffMember("B-17", mean_delay_s=2.0, sd_delay_s=0.0),)
>>> plan_confirmation(roster, due_at_s=10.0, rng=random.Random(1))
('B-17', 12.0)
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol import Ack, AckResult, Channel, DeviceEvent, encode_message, topic_for
from protocol.topics import subscription_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StaffMember:
    """One member of staff: reaction time (seconds, Gaussian, at least ``min_delay_s``) and the
    windows ``[start_s, end_s)`` of the run when they are away."""

    badge: str
    mean_delay_s: float = 1.0
    sd_delay_s: float = 0.3
    min_delay_s: float = 0.1
    absences: tuple[tuple[float, float], ...] = ()

    def present_at(self, t_s: float) -> bool:
        return not any(start <= t_s < end for start, end in self.absences)

    def back_at(self, t_s: float) -> float:
        """The first moment at or after ``t_s`` when this member is present."""
        for start, end in sorted(self.absences):
            if start <= t_s < end:
                t_s = end
        return t_s


def plan_confirmation(
    roster: tuple[StaffMember, ...], *, due_at_s: float, rng: random.Random
) -> tuple[str, float]:
    """``(badge, at_s)``: the member of staff who confirms a step due at ``due_at_s``, and when.

    Someone present takes it; if everyone is away, whoever comes back first does.
    """
    if not roster:
        raise ValueError("a kitchen needs at least one member of staff")
    present = [m for m in roster if m.present_at(due_at_s)]
    if present:
        member, start = rng.choice(present), due_at_s
    else:
        member = min(roster, key=lambda m: m.back_at(due_at_s))
        start = member.back_at(due_at_s)
    delay = max(member.min_delay_s, rng.gauss(member.mean_delay_s, member.sd_delay_s))
    return member.badge, start + delay


@dataclass
class ManualRecipe:
    """Which steps of a SKU are manual (by index), and how many steps it has."""

    manual_steps: tuple[int, ...]


class KitchenStaff:
    """Confirms the manual steps of one kitchen's started tasks, from its own named thread."""

    def __init__(
        self,
        *,
        kitchen_id: str,
        recipes: dict[str, ManualRecipe],
        roster: tuple[StaffMember, ...],
        mqtt_host: str,
        mqtt_port: int,
        tasks: Callable[[], list[dict[str, Any]]],
        seed: int = 0,
        display_id: str = "display-1",
        poll_s: float = 0.3,
    ) -> None:
        self.kitchen_id = kitchen_id
        self.recipes = recipes
        self.roster = roster
        self.display_id = display_id
        self.tasks = tasks
        self.poll_s = poll_s
        self.rng = random.Random(seed)
        self.confirmed: list[tuple[str, int, str]] = []
        self.delays_s: list[float] = []
        self._done_steps: set[tuple[str, int]] = set()
        self._planned: dict[tuple[str, int], tuple[str, float, float]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._origin = time.monotonic()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"staff-{kitchen_id}-{display_id}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_connect = lambda c, *_a: c.subscribe(subscription_for(kitchen_id), qos=1)
        self._client.on_message = self._on_message
        self._client.connect_async(mqtt_host, mqtt_port)
        self._thread = threading.Thread(target=self._run, name=f"staff-{kitchen_id}", daemon=True)

    def start(self) -> KitchenStaff:
        self._client.loop_start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)
        self._client.disconnect()
        self._client.loop_stop()

    def _now(self) -> float:
        return time.monotonic() - self._origin

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if not message.topic.endswith("/" + Channel.ACK.value):
            return
        with contextlib.suppress(ValueError):
            ack = Ack.model_validate_json(message.payload)
            if ack.result == AckResult.DONE and ".s" in ack.command_id:
                task_id, rest = ack.command_id.rsplit(".s", 1)
                step = int(rest.split(".", 1)[0])
                with self._lock:
                    self._done_steps.add((task_id, step))

    def _run(self) -> None:
        while not self._halt.wait(self.poll_s):
            try:
                started = self.tasks()
            except httpx.HTTPError as exc:
                # The control plane is away (a partition): staff cannot see new work.
                log.debug("staff of %s cannot list tasks: %r", self.kitchen_id, exc)
                started = []
            for task in started:
                self._plan(task)
            self._confirm_due()

    def _plan(self, task: dict[str, Any]) -> None:
        recipe = self.recipes.get(task.get("sku_id", ""))
        if recipe is None:
            return
        task_id = task["id"]
        for step in recipe.manual_steps:
            key = (task_id, step)
            with self._lock:
                if key in self._planned or key in self._done_steps:
                    continue
                ready = all((task_id, before) in self._done_steps for before in range(step))
            if not ready:
                return
            due = self._now()
            badge, at = plan_confirmation(self.roster, due_at_s=due, rng=self.rng)
            with self._lock:
                self._planned[key] = (badge, at, due)
            return

    def _confirm_due(self) -> None:
        now = self._now()
        with self._lock:
            due = [(k, v) for k, v in self._planned.items() if v[1] <= now]
            for key, _ in due:
                del self._planned[key]
        for (task_id, step), (badge, at, since) in due:
            self._publish(task_id, step, badge)
            with self._lock:
                self._done_steps.add((task_id, step))
                self.confirmed.append((task_id, step, badge))
                self.delays_s.append(at - since)

    def _publish(self, task_id: str, step: int, badge: str) -> None:
        self._seq += 1
        event = DeviceEvent(
            device_id=self.display_id,
            seq=self._seq,
            ts=time.time(),
            event="step_confirmed",
            data={"task_id": task_id, "step": step, "badge": badge},
        )
        self._client.publish(
            topic_for(self.kitchen_id, self.display_id, Channel.EVENT),
            encode_message(event),
            qos=1,
        )


def started_tasks_of(http: httpx.Client, kitchen_id: str) -> Callable[[], list[dict[str, Any]]]:
    """A ``tasks`` callable for :class:`KitchenStaff` over the control plane's API."""

    def fetch() -> list[dict[str, Any]]:
        response = http.get("/v1/tasks", params={"kitchen_id": kitchen_id, "state": "started"})
        response.raise_for_status()
        tasks: list[dict[str, Any]] = json.loads(response.text)["tasks"]
        return tasks

    return fetch
