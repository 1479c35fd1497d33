"""What every Brigade device does, whatever its kind.

A :class:`Firmware` announces itself (retained ``birth``, ``status`` online, ``state``), stamps
``state``, ``telemetry`` and ``event`` with one increasing device ``seq``, publishes readings
periodically and answers commands on ``cmd`` with acks:

* a repeated ``command_id`` re-sends the last ack for it and does nothing else;
* a command past ``expires_at`` is answered ``expired``;
* an unknown action, bad parameters or an unknown major version are answered ``rejected``;
* a payload without a usable ``command_id`` cannot be answered, so it is dropped and counted.

The firmware never sleeps and never reads the time itself: the main loop calls :meth:`tick`
and :meth:`on_command`, and the clock is injected. Kind-specific behaviour lives in
:mod:`firmware_stubs.oven` (cycles) and :mod:`firmware_stubs.fridge` (holding).
"""

from firmware_stubs import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware_stubs.hal import (
        Actuator,
        Clock,
        DoorSwitch,
        JsonObject,
        TemperatureSensor,
        Transport,
    )
    from firmware_stubs.kinds import KindSpec

FIRMWARE_VERSION = "0.1.0"
QOS_AT_LEAST_ONCE = 1


class RecentCommands:
    """A bounded map of recent ``command_id`` to its last ack, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._acks = {}  # type: dict[str, bytes]
        self._order = []  # type: list[str]

    def get(self, command_id: str) -> bytes | None:
        return self._acks.get(command_id)

    def remember(self, command_id: str, ack: bytes) -> None:
        if command_id in self._acks:
            self._order.remove(command_id)
        self._acks[command_id] = ack
        self._order.append(command_id)
        while len(self._order) > self.capacity:
            del self._acks[self._order.pop(0)]

    def __len__(self) -> int:
        return len(self._order)


class Firmware:
    """The common base. A behaviour overrides :meth:`behaviour_handlers` (its actions),
    :meth:`rest` (the resting set point and mode), :meth:`advance` (called every tick) and
    :meth:`state_extras` (what it adds to ``state``)."""

    def __init__(
        self,
        spec: "KindSpec",
        kitchen_id: str,
        device_id: str,
        clock: "Clock",
        sensor: "TemperatureSensor",
        actuator: "Actuator",
        transport: "Transport",
        model: str | None = None,
        core_probe: "TemperatureSensor | None" = None,
        door: "DoorSwitch | None" = None,
        seq_start: int = 0,
        recent_capacity: int = 32,
    ) -> None:
        if not wire.is_ident(kitchen_id) or not wire.is_ident(device_id):
            raise ValueError("kitchen and device ids must be 1-64 of [A-Za-z0-9_-]")
        self.spec = spec
        self.kitchen_id = kitchen_id
        self.device_id = device_id
        self.model = (model or spec.model)[:64]
        self.clock = clock
        self.sensor = sensor
        self.actuator = actuator
        self.transport = transport
        self.core_probe = core_probe
        self.door = door
        self.seq = seq_start
        self.recent = RecentCommands(recent_capacity)
        self.telemetry_interval_s = spec.telemetry_interval_s
        self.telemetry_qos = QOS_AT_LEAST_ONCE
        #: How long a cycle may take to reach its set point before its element is deemed dead.
        self.max_approach_s = spec.max_approach_s
        #: Payloads dropped unanswered, by protocol reason (too_large, not_json, ...).
        self.dropped = {}  # type: dict[str, int]
        self.duplicates = 0
        self.mode = "idle"
        self.setpoint_c = None  # type: float | None
        self.temp_c = None  # type: float | None
        #: False while the main sensor gives nothing plausible (a sensor_fault was raised).
        self.sensor_ok = True
        self.door_open = False
        self._next_telemetry_at = clock.monotonic()
        # Nothing goes out before the first announce, so ``birth`` always comes first.
        self._announced = False
        self.handlers = {"stop": self.do_stop, "configure": self.do_configure}
        self.handlers.update(self.behaviour_handlers())

    # -- topics and encoding ------------------------------------------------------------------

    def topic(self, channel: str) -> str:
        return wire.topic(self.kitchen_id, self.device_id, channel)

    def _publish(
        self, channel: str, message: "JsonObject", qos: int, retain: bool = False
    ) -> bytes:
        payload = wire.encode(message)
        self.transport.publish(self.topic(channel), payload, qos, retain)
        return payload

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def capabilities(self) -> "list[str]":
        found = list(self.spec.actions)
        if self.core_probe is not None:
            found.append("core_probe")
        if self.door is not None:
            found.append("door")
        return found

    def offline_status(self) -> bytes:
        """The retained ``status`` payload for the Last Will (no ``ts``: it is set in advance)."""
        return wire.encode({"v": wire.SCHEMA_VERSION, "state": "offline"})

    # -- lifecycle ----------------------------------------------------------------------------

    def boot(self) -> None:
        """Take up the resting set point and mode; call once before the first announce."""
        self._read_sensors()
        self.rest()
        self._next_telemetry_at = self.clock.monotonic()

    def announce(self) -> None:
        """Retained ``birth``, ``status`` online and ``state``; on every (re)connect."""
        self._announced = True
        now = self.clock.now()
        self._publish(
            "birth",
            {
                "v": wire.SCHEMA_VERSION,
                "device_id": self.device_id,
                "kind": self.spec.kind,
                "model": self.model,
                "firmware": FIRMWARE_VERSION,
                "capabilities": self.capabilities(),
                "ts": now,
            },
            QOS_AT_LEAST_ONCE,
            retain=True,
        )
        self._publish(
            "status",
            {"v": wire.SCHEMA_VERSION, "state": "online", "ts": now},
            QOS_AT_LEAST_ONCE,
            retain=True,
        )
        self.publish_state()

    def shutdown(self) -> None:
        """A clean power-down: element off, retained ``offline`` published by the device itself."""
        self.actuator.set_target(None)
        self._publish(
            "status",
            {"v": wire.SCHEMA_VERSION, "state": "offline", "ts": self.clock.now()},
            QOS_AT_LEAST_ONCE,
            retain=True,
        )

    def tick(self) -> None:
        """One pass of the main loop: read sensors, advance the state machine, send readings."""
        self._read_sensors()
        self.advance()
        if self.clock.monotonic() >= self._next_telemetry_at:
            self.publish_telemetry()
            self._next_telemetry_at = self.clock.monotonic() + self.telemetry_interval_s

    def _read_sensors(self) -> None:
        try:
            reading = self.sensor.read()  # type: float | None
        except OSError:
            # A bus error (I2C/SPI) is a missing reading, not a reason to stop the main loop.
            reading = None
        self.temp_c = wire.plausible_temp(reading)
        if (self.temp_c is not None) != self.sensor_ok:
            self.sensor_ok = not self.sensor_ok
            if self.sensor_ok:
                self.publish_event("sensor_restored", "info")
            else:
                self.publish_event(
                    "sensor_fault", "critical", "no plausible reading from " + self.spec.metric
                )
        if self.door is not None:
            opened = bool(self.door.is_open())
            if opened != self.door_open:
                self.door_open = opened
                self.publish_event("door_open" if opened else "door_closed", "info")
                self.publish_state()

    # -- what subclasses provide --------------------------------------------------------------

    def behaviour_handlers(self) -> "dict[str, Callable[[JsonObject], None]]":
        """The kind's own actions, by name (``cook``, ``set_point``, ...)."""
        return {}

    def rest(self) -> None:
        """Go to the resting mode; the default is off."""
        self.set_point(None, "off")

    def advance(self) -> None:
        """Advance the kind's state machine; nothing to do by default."""

    def state_extras(self) -> "JsonObject":
        """Fields a behaviour adds to ``state`` (the running command, remaining time)."""
        return {}

    # -- outputs ------------------------------------------------------------------------------

    def set_point(self, setpoint_c: float | None, mode: str) -> None:
        """Drive the element and record the mode; publishes ``state`` if anything changed."""
        changed = setpoint_c != self.setpoint_c or mode != self.mode
        self.setpoint_c = setpoint_c
        self.mode = mode
        self.actuator.set_target(setpoint_c)
        if changed:
            self.publish_state()

    def publish_state(self) -> None:
        # Until its birth is out the device says nothing else (and spends no seq on it).
        if not self._announced:
            return
        message = {
            "v": wire.SCHEMA_VERSION,
            "device_id": self.device_id,
            "seq": self._next_seq(),
            "ts": self.clock.now(),
            "mode": self.mode,
            "temp_c": self.temp_c,
            "setpoint_c": self.setpoint_c,
            "door_open": self.door_open,
        }
        message.update(self.state_extras())
        self._publish("state", message, QOS_AT_LEAST_ONCE, retain=True)

    def readings(self) -> "list[JsonObject]":
        found = []
        if self.temp_c is not None:
            found.append({"metric": self.spec.metric, "value": self.temp_c, "unit": "C"})
        core = self.core_temp()
        if core is not None:
            found.append({"metric": "core_temp", "value": core, "unit": "C"})
        if self.setpoint_c is not None:
            found.append({"metric": "setpoint", "value": self.setpoint_c, "unit": "C"})
        if self.door is not None:
            found.append(
                {"metric": "door_open", "value": 1 if self.door_open else 0, "unit": "bool"}
            )
        return found

    def publish_telemetry(self) -> None:
        readings = self.readings()
        if not self._announced or not readings:
            # With no plausible reading, the gap itself tells the agent the sensor is silent.
            return
        self._publish(
            "telemetry",
            {
                "v": wire.SCHEMA_VERSION,
                "device_id": self.device_id,
                "seq": self._next_seq(),
                "ts": self.clock.now(),
                "readings": readings,
            },
            self.telemetry_qos,
        )

    def publish_event(
        self, event: str, severity: str, detail: str = "", data: "JsonObject | None" = None
    ) -> None:
        if not self._announced:
            return
        self._publish(
            "event",
            {
                "v": wire.SCHEMA_VERSION,
                "device_id": self.device_id,
                "seq": self._next_seq(),
                "ts": self.clock.now(),
                "event": event,
                "severity": severity,
                "detail": detail[:512] or None,
                "data": data or None,
            },
            QOS_AT_LEAST_ONCE,
        )

    def core_temp(self) -> float | None:
        if self.core_probe is None:
            return None
        return wire.plausible_temp(self.core_probe.read())

    def send_ack(
        self,
        command_id: str,
        result: str,
        reason: str | None = None,
        data: "JsonObject | None" = None,
    ) -> None:
        """Publish an ack and remember it as this command's last answer."""
        payload = self._publish(
            "ack",
            {
                "v": wire.SCHEMA_VERSION,
                "command_id": command_id,
                "device_id": self.device_id,
                "result": result,
                "ts": self.clock.now(),
                "reason": reason,
                "data": data or None,
            },
            QOS_AT_LEAST_ONCE,
        )
        self.recent.remember(command_id, payload)

    # -- commands -----------------------------------------------------------------------------

    def on_command(self, payload: bytes) -> None:
        """Handle one ``cmd`` payload; never raises on bad input."""
        try:
            data = wire.decode_object(payload)
        except wire.Dropped as exc:
            self._count_drop(exc.reason)
            return
        command_id = data.get("command_id")
        if not wire.is_token(command_id):
            self._count_drop("invalid_message")
            return
        last_ack = self.recent.get(command_id)  # type: ignore[arg-type]
        if last_ack is not None:
            self.duplicates += 1
            self.transport.publish(self.topic("ack"), last_ack, QOS_AT_LEAST_ONCE, False)
            return
        try:
            command = wire.parse_command(data)
            if command["expires_at"] < self.clock.now():
                self.send_ack(command["command_id"], "expired", "expired before it was received")
                return
            handler = self.handlers.get(command["action"])
            if handler is None or command["action"] not in self.spec.actions:
                raise wire.Rejected("unknown_action: " + command["action"])
            handler(command)
        except wire.Rejected as exc:
            self.send_ack(command_id, "rejected", exc.reason)  # type: ignore[arg-type]

    def _count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def do_stop(self, command: "JsonObject") -> None:
        """Abandon whatever runs and switch the element off."""
        wire.reject_unknown_params(command["params"], ())
        self.abandon("stopped by command " + command["command_id"])
        self.set_point(None, "off")
        self.send_ack(command["command_id"], "done")

    def abandon(self, why: str) -> None:
        """Drop a running cycle, if the behaviour has one."""

    def do_configure(self, command: "JsonObject") -> None:
        """``telemetry_interval_s`` (1..86400), ``telemetry_qos`` (0 or 1) and/or
        ``max_approach_s`` (1..86400)."""
        params = command["params"]
        wire.reject_unknown_params(
            params, ("telemetry_interval_s", "telemetry_qos", "max_approach_s")
        )
        if not params:
            raise wire.Rejected("invalid_params: nothing to configure")
        interval = self.telemetry_interval_s
        qos = self.telemetry_qos
        if "telemetry_interval_s" in params:
            interval = wire.number_param(params, "telemetry_interval_s", 1.0, 86400.0)
        if "telemetry_qos" in params:
            qos = int(wire.number_param(params, "telemetry_qos", 0, 1))
            if qos != params["telemetry_qos"]:
                raise wire.Rejected("invalid_params: telemetry_qos must be 0 or 1")
        if "max_approach_s" in params:
            self.max_approach_s = wire.number_param(params, "max_approach_s", 1.0, 86400.0)
        self.telemetry_interval_s = interval
        self.telemetry_qos = qos
        self._next_telemetry_at = min(self._next_telemetry_at, self.clock.monotonic() + interval)
        self.send_ack(command["command_id"], "done")
