"""One simulated device: a firmware stub on a real MQTT broker, over a simulated plant.

The firmware from :mod:`firmware_stubs` runs unchanged; this module gives it hardware:

* a clock whose wall time is real (timestamps and ``expires_at`` stay comparable with the
  agent's) and whose tick counter runs ``time_scale`` times faster, so cook durations,
  telemetry intervals and the physics all speed up together;
* a sensor, core probe, door and heater/cooler backed by :mod:`simulators.physics`;
* a paho MQTT v5 link: stable client id with a persistent session, a retained ``offline``
  Last Will on ``status``, QoS 1 on ``cmd``, reconnection with capped exponential backoff, and
  a bounded outgoing queue while the broker is away.

>>> oven = SimulatedDevice("oven", "k1", "oven-1", mqtt_port=1883, time_scale=60)  # doctest: +SKIP
>>> with oven:  # doctest: +SKIP
...     oven.open_door()
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_stubs import CycleFirmware, Firmware, build_firmware, spec_for
from simulators import physics

log = logging.getLogger(__name__)

#: Outgoing messages paho keeps while the broker is away; beyond that they are dropped, counted.
MAX_QUEUED_PUBLISHES = 1000


def reconnect_delay(attempt: int, *, base_s: float = 0.25, cap_s: float = 5.0) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): doubling, capped.

    >>> [reconnect_delay(n) for n in range(6)]
    [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]
    """
    return float(min(cap_s, base_s * 2 ** min(attempt, 32)))


class ScaledClock:
    """Real wall time; a tick counter that runs ``time_scale`` times faster than real time."""

    def __init__(
        self,
        time_scale: float = 1.0,
        *,
        wall: Callable[[], float] = time.time,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._wall = wall
        self._ticks = ticks
        self._origin = ticks()

    def now(self) -> float:
        return self._wall()

    def monotonic(self) -> float:
        return (self._ticks() - self._origin) * self.time_scale


class SimulatedPlant:
    """The thermal state of one device, advanced to the firmware's tick counter."""

    def __init__(self, params: physics.PlantParams, temp_c: float, monotonic: float) -> None:
        self.params = params
        self.state = physics.Thermal(temp_c=temp_c)
        self.setpoint_c: float | None = None
        self.door_open = False
        #: A dead heating element or compressor: the firmware's set point has no effect.
        self.element_failed = False
        self._at = monotonic

    def advance(self, monotonic: float) -> None:
        self.state = physics.step(
            self.state,
            self.params,
            dt_s=monotonic - self._at,
            setpoint_c=None if self.element_failed else self.setpoint_c,
            door_open=self.door_open,
        )
        self._at = monotonic

    # The hardware interfaces of firmware_stubs.hal, all backed by this one state.
    def set_target(self, setpoint_c: float | None) -> None:
        self.setpoint_c = setpoint_c

    def read(self) -> float:
        return self.state.temp_c

    def is_open(self) -> bool:
        return self.door_open


class CoreProbe:
    """The probe in the product; hanging in the chamber when nothing is loaded."""

    def __init__(self, plant: SimulatedPlant) -> None:
        self.plant = plant

    def read(self) -> float:
        core = self.plant.state.core_c
        return self.plant.state.temp_c if core is None else core


class PahoTransport:
    """The firmware's ``publish`` over a paho client; counts what the full queue dropped."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.last: mqtt.MQTTMessageInfo | None = None
        self.dropped = 0

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        # While the broker is away paho keeps QoS 1 messages (bounded) and sends them on
        # reconnect; QoS 0 readings are lost, and the agent sees the gap in seq.
        self.last = self.client.publish(topic, payload, qos=qos, retain=retain)
        if self.last.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("outgoing queue full: %d messages dropped so far", self.dropped)

    def last_delivered(self) -> bool:
        """Whether the latest publish reached the broker (QoS 1: PUBACK received)."""
        if self.last is None:
            return True
        try:
            return self.last.is_published()
        except RuntimeError:
            return False


class SimulatedDevice:
    """A device of ``kind`` in ``kitchen_id`` on the broker at ``mqtt_host:mqtt_port``.

    ``start()`` runs it on one named thread; ``stop()`` publishes retained ``offline``,
    disconnects cleanly (so the broker does not fire the Last Will) and joins the thread.
    ``drop_connection()`` cuts the network without a DISCONNECT: the broker publishes the Last
    Will, and the device reconnects with backoff and announces itself again.

    ``time_scale`` speeds up the device's own time (cycle durations, telemetry interval and
    physics alike); ``plant`` replaces the kind's thermal parameters (a faster heater for a
    short demo, a failing one for a fault scenario). A device is started once.
    """

    def __init__(
        self,
        kind: str,
        kitchen_id: str,
        device_id: str,
        *,
        mqtt_host: str = "127.0.0.1",
        mqtt_port: int = 1883,
        time_scale: float = 1.0,
        model: str | None = None,
        plant: physics.PlantParams | None = None,
        tick_s: float = 0.05,
        keepalive_s: int = 10,
        session_expiry_s: int = 3600,
        max_approach_s: float | None = None,
    ) -> None:
        self.spec = spec_for(kind)
        self.kitchen_id = kitchen_id
        self.device_id = device_id
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.tick_s = tick_s
        self.clock = ScaledClock(time_scale)
        params = plant or physics.PLANTS.get(kind, physics.PlantParams())
        rest = self.spec.default_setpoint_c
        self.plant = SimulatedPlant(
            params, params.ambient_c if rest is None else rest, self.clock.monotonic()
        )
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"brigade-{kitchen_id}-{device_id}",
            protocol=mqtt.MQTTv5,
        )
        self.transport = PahoTransport(self.client)
        self.firmware: Firmware = build_firmware(
            kind,
            kitchen_id,
            device_id,
            self.clock,
            self.plant,
            self.plant,
            self.transport,
            model=model,
            core_probe=CoreProbe(self.plant) if self.spec.has_core_probe else None,
            door=self.plant if self.spec.has_door else None,
        )
        if max_approach_s is not None:
            # A fast plant (the demo's) reaches its set point in seconds; so must a fault show.
            self.firmware.max_approach_s = max_approach_s
        self.client.max_queued_messages_set(MAX_QUEUED_PUBLISHES)
        # A persistent session under a stable client id: QoS 1 commands sent while the device
        # is away wait for it at the broker. connect_async only records where to connect.
        session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        session.SessionExpiryInterval = session_expiry_s
        self.client.connect_async(
            mqtt_host, mqtt_port, keepalive=keepalive_s, clean_start=False, properties=session
        )
        self.client.will_set(
            self.firmware.topic("status"), self.firmware.offline_status(), qos=1, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        #: Set while connected with the cmd subscription confirmed.
        self.online = threading.Event()
        #: Successful connections so far (the first one plus every reconnect).
        self.connections = 0
        self._stopping = threading.Event()
        self._drop_requested = threading.Event()
        self._socket_open = False
        self._attempt = 0
        self._next_attempt_at = 0.0
        self._thread: threading.Thread | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"device-{self.kitchen_id}-{self.device_id}"

    @property
    def temp_c(self) -> float:
        """The simulated chamber temperature now (for tests and the demo's display)."""
        return self.plant.state.temp_c

    def start(self, *, wait: bool = True, timeout: float = 10.0) -> SimulatedDevice:
        """Start the device thread; with ``wait``, return once it has announced itself."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already started")
        self.firmware.boot()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if wait and not self.online.wait(timeout):
            self.stop()
            raise TimeoutError(
                f"{self.name} did not connect to {self.mqtt_host}:{self.mqtt_port} in {timeout}s"
            )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Publish retained ``offline``, disconnect cleanly and join the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("%s did not stop within %.1fs", self.name, timeout)

    def drop_connection(self) -> None:
        """Cut the network link without a DISCONNECT (the broker fires the Last Will)."""
        self._drop_requested.set()

    def open_door(self) -> None:
        self.plant.door_open = True

    def close_door(self) -> None:
        self.plant.door_open = False

    def fail_element(self) -> None:
        """The heating element (or compressor) dies: the chamber drifts to ambient, and the
        firmware notices (``element_fault`` on a cycle, ``temperature_alarm`` when holding)."""
        self.plant.element_failed = True

    def repair_element(self) -> None:
        self.plant.element_failed = False

    def load_product(self) -> None:
        """Staff put product in (cold into an oven or fridge, hot into a chiller)."""
        self.plant.state = physics.load(self.plant.state, self.plant.params)

    def __enter__(self) -> SimulatedDevice:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the device thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._drop_requested.is_set():
                    self._drop_requested.clear()
                    self._cut_link()
                if self._socket_open:
                    if self.client.loop(timeout=self.tick_s) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        self._link_lost()
                elif time.monotonic() >= self._next_attempt_at:
                    self._try_connect()
                else:
                    self._stopping.wait(self.tick_s)
                self._step_plant()
                self.firmware.tick()
        except Exception:
            log.exception("%s crashed", self.name)
            raise
        finally:
            self._close()

    def _step_plant(self) -> None:
        self.plant.advance(self.clock.monotonic())
        # Staff load the product when the cycle's timed part starts, and take it out after.
        firmware = self.firmware
        cycle = firmware.cycle if isinstance(firmware, CycleFirmware) else None
        if cycle is not None and cycle["ends_at"] is not None and self.plant.state.core_c is None:
            self.plant.state = physics.load(self.plant.state, self.plant.params)
        elif cycle is None and self.plant.state.core_c is not None:
            self.plant.state = physics.unload(self.plant.state)

    def _try_connect(self) -> None:
        try:
            self.client.reconnect()
        except OSError as exc:
            delay = reconnect_delay(self._attempt)
            if self._attempt == 0:
                log.warning("%s cannot reach the broker (%s); retrying", self.name, exc)
            self._attempt += 1
            self._next_attempt_at = time.monotonic() + delay
            return
        self._socket_open = True

    def _link_lost(self) -> None:
        self._socket_open = False
        self.online.clear()
        self._next_attempt_at = time.monotonic() + reconnect_delay(self._attempt)
        self._attempt += 1

    def _cut_link(self) -> None:
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            # shutdown() sends FIN with no MQTT DISCONNECT: an unclean loss, as a cable pull.
            sock.shutdown(socket.SHUT_RDWR)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("%s refused by the broker: %s", self.name, reason_code)
            return
        self._attempt = 0
        self.connections += 1
        client.subscribe(self.firmware.topic("cmd"), qos=1)
        self.firmware.announce()
        log.info("%s connected (session present: %s)", self.name, flags.session_present)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # Online means able to take commands: the broker has confirmed the cmd subscription.
        if any(code.is_failure for code in reason_codes):
            log.error("%s: cmd subscription refused: %s", self.name, reason_codes)
            return
        self.online.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.online.clear()
        if not self._stopping.is_set():
            log.warning("%s lost the broker: %s", self.name, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.firmware.topic("cmd"):
            return
        dropped_before = sum(self.firmware.dropped.values())
        try:
            self.firmware.on_command(bytes(message.payload))
            dropped = sum(self.firmware.dropped.values())
            if dropped > dropped_before and (dropped_before == 0 or dropped % 100 == 0):
                # Logged once per burst; the firmware's counters by reason have the detail.
                log.warning(
                    "%s dropped %d unanswerable commands: %s",
                    self.name,
                    dropped,
                    self.firmware.dropped,
                )
        except Exception:
            # The firmware answers bad input itself; this guards the simulator against its bugs.
            log.exception("%s failed on a command", self.name)

    def _close(self) -> None:
        """Clean power-down: retained offline published and flushed, then DISCONNECT."""
        if self._socket_open and self.online.is_set():
            self.firmware.shutdown()
            deadline = time.monotonic() + 2.0
            while not self.transport.last_delivered() and time.monotonic() < deadline:
                if self.client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        self.client.disconnect()
        self._socket_open = False
        self.online.clear()


def run_device(
    kind: str,
    kitchen_id: str,
    device_id: str,
    *,
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
    time_scale: float = 1.0,
    model: str | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run one device until ``stop`` is set or the process gets SIGTERM/SIGINT."""
    stop = stop or threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
    device = SimulatedDevice(
        kind,
        kitchen_id,
        device_id,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        time_scale=time_scale,
        model=model,
    )
    try:
        device.start(wait=False)
        while not stop.wait(0.5):
            pass
    finally:
        device.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
