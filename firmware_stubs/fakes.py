"""Fakes of the hardware interfaces in :mod:`firmware_stubs.hal`, for tests and examples.

>>> clock = ManualClock(now=1767225600.0)
>>> clock.advance(30)
>>> clock.now(), clock.monotonic()
(1767225630.0, 30.0)
"""

import json

from firmware_stubs import build_firmware, spec_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware_stubs.hal import JsonObject


class ManualClock:
    """A clock that moves only when told; both time bases advance together."""

    def __init__(self, now: float = 1767225600.0, monotonic: float = 0.0) -> None:
        self._now = now
        self._monotonic = monotonic

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._monotonic += seconds


class Thermometer:
    """A sensor whose reading the test sets."""

    def __init__(self, temp_c: float = 22.0) -> None:
        self.temp_c = temp_c

    def read(self) -> float:
        return self.temp_c


class Element:
    """An actuator that remembers its set point (``None`` = off)."""

    def __init__(self) -> None:
        self.setpoint_c = None  # type: float | None

    def set_target(self, setpoint_c: float | None) -> None:
        self.setpoint_c = setpoint_c


class Door:
    """A door switch the test opens and closes."""

    def __init__(self, opened: bool = False) -> None:
        self.opened = opened

    def is_open(self) -> bool:
        return self.opened


class Published:
    """One message the firmware published."""

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain

    @property
    def channel(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def json(self) -> "JsonObject":
        decoded = json.loads(self.payload)  # type: JsonObject
        return decoded


class RecordingTransport:
    """A transport that keeps every publish, in order."""

    def __init__(self) -> None:
        self.sent = []  # type: list[Published]

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append(Published(topic, payload, qos, retain))

    def on(self, channel: str) -> list[Published]:
        """Messages published on ``channel`` (``ack``, ``state``, ...)."""
        return [message for message in self.sent if message.channel == channel]

    def last(self, channel: str) -> "JsonObject":
        """The decoded payload of the latest message on ``channel``."""
        return self.on(channel)[-1].json()

    def clear(self) -> None:
        self.sent.clear()


class Bench:
    """A firmware of ``kind`` on the test bench: wired to fakes, booted and announced.

    >>> bench = Bench("oven")
    >>> bench.send_command("cook", {"setpoint_c": 180, "duration_s": 600})["result"]
    'accepted'
    """

    def __init__(
        self,
        kind: str,
        kitchen_id: str = "k1",
        device_id: str | None = None,
        now: float = 1767225600.0,
        temp_c: float = 22.0,
    ) -> None:
        spec = spec_for(kind)
        self.clock = ManualClock(now=now)
        self.sensor = Thermometer(temp_c)
        self.core = Thermometer(4.0) if spec.has_core_probe else None
        self.element = Element()
        self.door = Door() if spec.has_door else None
        self.transport = RecordingTransport()
        self.firmware = build_firmware(
            kind,
            kitchen_id,
            device_id or kind.replace("_", "-") + "-1",
            self.clock,
            self.sensor,
            self.element,
            self.transport,
            core_probe=self.core,
            door=self.door,
        )
        self.firmware.boot()
        self.firmware.announce()
        self._commands = 0

    def command(
        self,
        action: str,
        params: "JsonObject | None" = None,
        command_id: str | None = None,
        expires_in: float = 30.0,
        task_id: str | None = None,
        step: int | None = None,
    ) -> bytes:
        """The JSON payload of a ``cmd`` as the agent would send it (not sent)."""
        self._commands += 1
        now = self.clock.now()
        message = {
            "v": "1.0",
            "command_id": command_id or "c-" + str(self._commands),
            "action": action,
            "params": params or {},
            "issued_at": now,
            "expires_at": now + expires_in,
            "task_id": task_id,
            "step": step,
        }
        return json.dumps({k: v for k, v in message.items() if v is not None}).encode()

    def send_command(
        self,
        action: str,
        params: "JsonObject | None" = None,
        command_id: str | None = None,
        expires_in: float = 30.0,
        task_id: str | None = None,
        step: int | None = None,
    ) -> "JsonObject":
        """Send a command (arguments as :meth:`command`) and return the one ack it produced."""
        before = len(self.transport.on("ack"))
        self.firmware.on_command(
            self.command(action, params, command_id, expires_in, task_id, step)
        )
        acks = self.transport.on("ack")[before:]
        if len(acks) != 1:
            raise AssertionError("expected one ack, got " + str(len(acks)))
        return acks[0].json()

    def run(self, seconds: float, step_s: float = 1.0) -> None:
        """Let ``seconds`` pass, ticking every ``step_s``."""
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step_s)
            elapsed += step_s
            self.firmware.tick()
