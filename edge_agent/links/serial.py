"""The agent's link to serial probes and older equipment (pyserial, NMEA-style line frames).

One :class:`SerialLink` per configured port, each on its own thread (``brigade-serial-N``):

* bytes go through :class:`protocol.serial_frames.LineSplitter` and
  :func:`protocol.serial_frames.decode_frame`; a bad frame (checksum, field count, overlong,
  non-ASCII, garbage, a bad value) is dropped and counted by its reason, never raised;
* ``TMP`` readings (°F converted to °C) and ``STA`` frames go to the ingest loop as numbered
  device messages, so probe ``seq`` gaps are counted like MQTT ones; the first frame of a probe
  after (re)connecting marks it online, losing the port marks its probes offline;
* ``CHK`` frames (an accuracy check against a reference, e.g. iced water) go to the food-safety
  monitor as a probe check, exactly like a ``probe_check`` event on MQTT;
* unplug/replug: any error opening or reading the port (the device path vanished, EIO after a
  hang-up) closes it and retries with jittered exponential backoff, capped, until the path is
  back; the link never gives up while the agent runs;
* configuration: ``CFG`` frames (``key,value``) are (re)sent after every connect and on
  :meth:`SerialLink.configure`; an ``ACK`` frame settles each key as ``ok`` or ``err``; a key
  still pending after ``ack_timeout_s`` is sent again.

The port itself is behind the :class:`SerialPort` seam (pyserial's ``Serial`` in production).

>>> link = SerialLink(path="/dev/ttyUSB0", sink=ingest)  # doctest: +SKIP
>>> reader = threading.Thread(target=link.run, args=(stop,), name="brigade-serial-0")
>>> reader.start()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

import serial

from edge_agent.backoff import Backoff
from edge_agent.errors import LinkError
from edge_agent.links.mqtt import DeviceSink, DropCounter
from edge_agent.readings import Observed, ProbeCheck, ReadingIn, StatusSeen
from protocol import Frame, FrameError, FrameType, decode_frame, encode_frame
from protocol.serial_frames import LineSplitter, parse_probe_check, parse_temperature

log = logging.getLogger(__name__)

#: The host's own id in the ``CFG`` frames it sends.
HOST_ID = "agent"


class SerialPort(Protocol):
    """What the link needs of an open port (pyserial's ``Serial`` has it)."""

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


def open_serial(path: str, baudrate: int, timeout_s: float) -> SerialPort:
    """Open ``path`` with pyserial; raise :class:`LinkError` when it cannot be opened."""
    try:
        port: SerialPort = serial.Serial(path, baudrate=baudrate, timeout=timeout_s)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open serial port {path}: {exc}") from exc
    return port


Opener = Callable[[str, int, float], SerialPort]


class SerialLink:
    """Reads one serial port for as long as the agent runs; see the module docstring."""

    def __init__(
        self,
        *,
        path: str,
        sink: DeviceSink,
        baudrate: int = 9600,
        configure: dict[str, str] | None = None,
        opener: Opener = open_serial,
        read_timeout_s: float = 0.2,
        ack_timeout_s: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.path = path
        self.baudrate = baudrate
        self.drops = DropCounter(what="serial frame")
        self._sink = sink
        self._opener = opener
        self._read_timeout_s = read_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=30.0, rng=random.Random())
        self._lock = threading.Lock()
        self._port: SerialPort | None = None
        self._wanted: dict[str, str] = dict(configure or {})
        #: key -> "pending" | "ok" | "err"
        self._config_state: dict[str, str] = {}
        self._config_sent_at: dict[str, float] = {}
        self._host_seq = 0
        self._probes: set[str] = set()
        self.state = "down"
        self.connects = 0
        self.frames_ok = 0
        self.sensor_errors = 0

    # -- public ----------------------------------------------------------------------------------

    def configure(self, key: str, value: str) -> None:
        """Ask the probe to set ``key`` to ``value`` (now if connected, else on connect)."""
        with self._lock:
            self._wanted[key] = value
            self._config_state[key] = "pending"
            self._config_sent_at.pop(key, None)

    def config_state(self) -> dict[str, str]:
        """``ok``/``err``/``pending`` per configured key."""
        with self._lock:
            return dict(self._config_state)

    def probes(self) -> set[str]:
        with self._lock:
            return set(self._probes)

    def run(self, stop: threading.Event) -> None:
        """Connect, read, and reconnect with backoff until ``stop`` is set."""
        while not stop.is_set():
            try:
                port = self._opener(self.path, self.baudrate, self._read_timeout_s)
            except LinkError as exc:
                delay = self._backoff.next_delay()
                log.debug("serial port unavailable", extra={"path": self.path, "error": str(exc)})
                stop.wait(delay)
                continue
            self._connected(port)
            try:
                self._read_until_lost(port, stop)
            finally:
                # The agent stopping is not the probe going away: no offline report then.
                self._lost(port, report=not stop.is_set())
            if not stop.is_set():
                stop.wait(self._backoff.next_delay())

    # -- the connection --------------------------------------------------------------------------

    def _connected(self, port: SerialPort) -> None:
        with self._lock:
            self._port = port
            self.connects += 1
            for key in self._wanted:
                self._config_state[key] = "pending"
                self._config_sent_at.pop(key, None)
        self.state = "up"
        log.info("serial port connected", extra={"path": self.path, "connects": self.connects})

    def _lost(self, port: SerialPort, *, report: bool) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()
        with self._lock:
            self._port = None
            probes, self._probes = self._probes, set()
        self.state = "down"
        now = time.time()
        for device_id in sorted(probes) if report else ():
            self._sink.submit(StatusSeen(device_id=device_id, link="serial", at=now, online=False))

    def _read_until_lost(self, port: SerialPort, stop: threading.Event) -> None:
        splitter = LineSplitter()
        while not stop.is_set():
            self._send_pending_config(port)
            try:
                chunk = port.read(256)
            except (serial.SerialException, OSError) as exc:
                log.warning("serial port lost", extra={"path": self.path, "error": str(exc)})
                return
            if not chunk:
                continue
            overlong_before = splitter.overlong
            lines = splitter.feed(chunk)
            for _ in range(splitter.overlong - overlong_before):
                self.drops.drop("overlong", f"{self.path}: line longer than a frame")
            for line in lines:
                self._handle_line(line)
            if self._backoff.attempt:
                self._backoff.reset()  # data flows again: the next unplug starts from short waits

    def _send_pending_config(self, port: SerialPort) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                (key, value)
                for key, value in self._wanted.items()
                if self._config_state.get(key) == "pending"
                and now - self._config_sent_at.get(key, -1e9) >= self._ack_timeout_s
            ]
            for key, _ in due:
                self._config_sent_at[key] = now
        for key, value in due:
            self._host_seq += 1
            frame = encode_frame(Frame(FrameType.CFG, HOST_ID, self._host_seq, (key, value)))
            try:
                port.write(frame)
            except (serial.SerialException, OSError) as exc:
                log.warning("serial write failed", extra={"path": self.path, "error": str(exc)})
                return

    # -- frames ----------------------------------------------------------------------------------

    def _handle_line(self, line: bytes) -> None:
        try:
            frame = decode_frame(line)
            self._handle_frame(frame)
        except FrameError as exc:
            self.drops.drop(exc.reason, f"{self.path}: {exc}")

    def _handle_frame(self, frame: Frame) -> None:
        now = time.time()
        with self._lock:
            new_probe = frame.device_id not in self._probes
            self._probes.add(frame.device_id)
        if new_probe:
            self._sink.submit(
                StatusSeen(device_id=frame.device_id, link="serial", at=now, online=True)
            )
        if frame.type is FrameType.TMP:
            value = parse_temperature(frame)
            reading = ReadingIn(frame.device_id, "temp", "C", value, at=now, link="serial")
            self._submit(Observed(frame.device_id, "serial", frame.seq, now, (reading,)))
        elif frame.type is FrameType.STA:
            self._submit(Observed(frame.device_id, "serial", frame.seq, now))
        elif frame.type is FrameType.ACK:
            key, result = frame.fields
            with self._lock:
                if key in self._wanted:
                    self._config_state[key] = "ok" if result == "ok" else "err"
            if result != "ok":
                log.warning("probe refused a setting", extra={"path": self.path, "key": key})
            # Every frame a probe sends takes its seq: counted, or the next one looks like a gap.
            self._submit(Observed(frame.device_id, "serial", frame.seq, now))
        elif frame.type is FrameType.CHK:
            # Staff checked the probe against a reference; the monitor keeps it as evidence
            # and raises probe_inaccurate when it is off by more than the probe's accuracy.
            reading_c, reference_c = parse_probe_check(frame)
            check = ProbeCheck(
                device_id=frame.device_id,
                probe="temp",
                reading_c=reading_c,
                reference_c=reference_c,
                badge=None,  # a serial probe has no badge reader
                at=now,
            )
            self._submit(check)
            self._submit(Observed(frame.device_id, "serial", frame.seq, now))
        elif frame.type is FrameType.ERR:
            self.sensor_errors += 1
            self._submit(Observed(frame.device_id, "serial", frame.seq, now))
            log.warning(
                "probe reports a sensor error",
                extra={"device_id": frame.device_id, "code": frame.fields[0]},
            )
        else:
            raise FrameError(f"{frame.type} frames go to probes, not from them", reason="bad_type")
        self.frames_ok += 1

    def _submit(self, item: Observed | ProbeCheck) -> None:
        if not self._sink.submit(item):
            self.drops.drop("ingest_full", f"{item.device_id}: ingest queue full")
