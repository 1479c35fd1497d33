"""A serial temperature probe on a pseudo-terminal, with the faults real probes have.

The probe's logic is :class:`firmware_stubs.probe.ProbeFirmware`, unchanged; this module gives
it hardware:

* a UART that is the master side of a pty (``os.openpty``): the agent opens the slave path with
  pyserial exactly as it opens ``/dev/ttyUSB0``. A stable symlink (``link_path``, like
  ``/dev/serial/by-id/...``) points at the current slave; :meth:`SerialProbe.unplug` removes it
  and hangs the port up, :meth:`SerialProbe.replug` brings it back on a fresh pty;
* a temperature source: the physics model (:class:`PhysicsSource`, a fridge, a hot-holding
  cabinet, food cooling in a blast chiller) or a scripted series (:class:`ScriptedSource`);
* faults, switchable at run time (:class:`ProbeFaults`): on the sensor (noise, drift, a stuck
  value, an open circuit) and on the line (dropped frames, garbage lines, bad checksums,
  overlong lines), each counted in :attr:`SerialProbe.injected` so a test can compare what the
  reader saw with what was done to it.

>>> probe = SerialProbe("probe-1", ScriptedSource([(0, 4.0)]), link_path=path)  # doctest: +SKIP
>>> with probe, serial.Serial(str(path), timeout=1) as port:  # doctest: +SKIP
...     line = port.readline()
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import select
import threading
import tty
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from firmware_stubs.probe import MAX_FRAME_BYTES, ProbeFirmware
from simulators import physics
from simulators.devices import ScaledClock, SimulatedPlant
from simulators.physics import PLANTS, PlantParams

# -- temperature sources ----------------------------------------------------------------------


class ScriptedSource:
    """Temperatures from a script of ``(t_s, temp_c)`` points, linearly interpolated and held
    after the last one; ``t_s`` is on the probe clock's tick counter (simulated seconds).

    >>> source = ScriptedSource([(0, 60.0), (100, 20.0)], ticks=lambda: 25.0)
    >>> source.read()
    50.0
    """

    def __init__(
        self, points: Sequence[tuple[float, float]], ticks: Callable[[], float] | None = None
    ) -> None:
        if not points:
            raise ValueError("a scripted source needs at least one point")
        self.points = sorted(points)
        self.ticks = ticks or (lambda: 0.0)

    def read(self) -> float:
        t = self.ticks()
        before = self.points[0]
        if t <= before[0]:
            return before[1]
        for after in self.points[1:]:
            if t <= after[0]:
                share = (t - before[0]) / (after[0] - before[0])
                return before[1] + share * (after[1] - before[1])
            before = after
        return before[1]


class PhysicsSource:
    """The probe in a piece of equipment's chamber, or in the product (``measure="core"``),
    following :mod:`simulators.physics`. ``fail()`` is a compressor or heating element failure:
    the element stops and the chamber drifts to ambient."""

    def __init__(
        self,
        params: PlantParams,
        *,
        setpoint_c: float | None,
        start_c: float | None = None,
        measure: str = "chamber",
        ticks: Callable[[], float] | None = None,
    ) -> None:
        self.ticks = ticks or (lambda: 0.0)
        self.plant = SimulatedPlant(
            params,
            start_c if start_c is not None else (setpoint_c or params.ambient_c),
            self.ticks(),
        )
        self.plant.setpoint_c = setpoint_c
        self.measure = measure
        self._lock = threading.Lock()

    @classmethod
    def of_kind(cls, kind: str, *, setpoint_c: float | None, **kwargs: object) -> PhysicsSource:
        return cls(PLANTS[kind], setpoint_c=setpoint_c, **kwargs)  # type: ignore[arg-type]

    def read(self) -> float:
        with self._lock:
            self.plant.advance(self.ticks())
            core = self.plant.state.core_c
            if self.measure == "core" and core is not None:
                return core
            return self.plant.state.temp_c

    def _change(self, apply: Callable[[SimulatedPlant], None]) -> None:
        with self._lock:
            self.plant.advance(self.ticks())
            apply(self.plant)

    def set_door(self, opened: bool) -> None:
        self._change(lambda plant: setattr(plant, "door_open", opened))

    def fail(self) -> None:
        """The compressor or heating element stops: no more set point."""
        self._change(lambda plant: setattr(plant, "setpoint_c", None))

    def repair(self, setpoint_c: float) -> None:
        self._change(lambda plant: setattr(plant, "setpoint_c", setpoint_c))

    def load(self) -> None:
        """Put product in (cold into an oven, hot into a chiller): see physics.load."""
        self._change(lambda plant: setattr(plant, "state", physics.load(plant.state, plant.params)))


# -- faults -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeFaults:
    """What is wrong with the probe. Rates are probabilities per frame (seeded)."""

    #: Sensor: Gaussian noise (standard deviation), drift per simulated minute, a value the
    #: sensor is stuck at, an open circuit (ERR frames instead of readings).
    noise_sd_c: float = 0.0
    drift_c_per_min: float = 0.0
    stuck_at_c: float | None = None
    open_circuit: bool = False
    #: Line: frames lost, garbage lines before a frame, a corrupted checksum, an overlong line.
    dropout_rate: float = 0.0
    garbage_rate: float = 0.0
    bad_checksum_rate: float = 0.0
    overlong_rate: float = 0.0


class FaultySensor:
    """The source as the probe's sensor reads it, through the sensor faults in force."""

    def __init__(
        self,
        source: ScriptedSource | PhysicsSource,
        faults: Callable[[], ProbeFaults],
        rng: random.Random,
        ticks: Callable[[], float],
    ) -> None:
        self.source = source
        self.faults = faults
        self.rng = rng
        self.ticks = ticks
        self._drift_from = ticks()

    def read(self) -> float:
        faults = self.faults()
        if faults.open_circuit:
            raise OSError(errno.EIO, "thermocouple open circuit")
        if faults.stuck_at_c is not None:
            return faults.stuck_at_c
        value = self.source.read()
        if faults.drift_c_per_min:
            value += faults.drift_c_per_min * (self.ticks() - self._drift_from) / 60.0
        else:
            self._drift_from = self.ticks()
        if faults.noise_sd_c:
            value += self.rng.gauss(0.0, faults.noise_sd_c)
        return value


class PtyUart:
    """The probe's end of a pty: non-blocking, so a port nobody reads never stalls the probe
    (bytes a full or unopened port cannot take are lost and counted, as on a real UART)."""

    def __init__(self) -> None:
        master, slave = os.openpty()
        # Raw: no echo, no CR/LF translation, before anyone opens the slave.
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.master: int | None = master
        self.unheard_bytes = 0

    def write(self, data: bytes) -> int:
        if self.master is None:
            self.unheard_bytes += len(data)
            return 0
        try:
            return os.write(self.master, data)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EIO):
                raise
            self.unheard_bytes += len(data)
            return 0

    def read(self) -> bytes:
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 1024)
        except OSError as exc:
            # EAGAIN: nothing waiting; EIO: nobody has the slave open.
            if exc.errno not in (errno.EAGAIN, errno.EIO):
                raise
            return b""

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None


class FaultyLine:
    """Between the firmware and the pty: applies the line faults to each frame written."""

    def __init__(
        self,
        port: Callable[[], PtyUart],
        faults: Callable[[], ProbeFaults],
        rng: random.Random,
        injected: Counter[str],
        lock: threading.Lock,
    ) -> None:
        self.port = port
        self.faults = faults
        self.rng = rng
        self.injected = injected
        self.lock = lock
        self.sent: Counter[str] = Counter()

    def _count(self, what: str) -> None:
        with self.lock:
            self.injected[what] += 1

    def write(self, frame: bytes) -> int:
        faults = self.faults()
        port = self.port()
        if faults.garbage_rate and self.rng.random() < faults.garbage_rate:
            port.write(garbage_line(self.rng))
            self._count("garbage")
        if faults.overlong_rate and self.rng.random() < faults.overlong_rate:
            port.write(b"$TMP," + b"9" * (MAX_FRAME_BYTES + 20) + b"\r\n")
            self._count("overlong")
        if faults.dropout_rate and self.rng.random() < faults.dropout_rate:
            self._count("dropout")
            return len(frame)
        if faults.bad_checksum_rate and self.rng.random() < faults.bad_checksum_rate:
            frame = corrupt_checksum(frame)
            self._count("bad_checksum")
        else:
            with self.lock:
                self.sent[frame[1:4].decode()] += 1
        return port.write(frame)

    def read(self) -> bytes:
        return self.port().read()


def garbage_line(rng: random.Random) -> bytes:
    """Line noise: high bytes and ASCII, no newline inside, ended by one (``non_ascii``)."""
    noise = bytes(rng.choice([0xFF, 0xFE, 0x80, 0x24, 0x2C, 0x41]) for _ in range(12))
    return b"\xff" + noise + b"\r\n"


def corrupt_checksum(frame: bytes) -> bytes:
    """The same frame with a checksum that does not match its body.

    >>> corrupt_checksum(b"$TMP,p,1,3.5,C*63\\r\\n")
    b'$TMP,p,1,3.5,C*9C\\r\\n'
    """
    star = frame.rfind(b"*")
    wrong = int(frame[star + 1 : star + 3], 16) ^ 0xFF
    return frame[: star + 1] + f"{wrong:02X}".encode() + b"\r\n"


# -- the probe --------------------------------------------------------------------------------


class SerialProbe:
    """A probe on a pty behind ``link_path``, sending frames from its own named thread."""

    def __init__(
        self,
        device_id: str,
        source: ScriptedSource | PhysicsSource,
        *,
        link_path: Path,
        interval_s: float = 1.0,
        time_scale: float = 1.0,
        faults: ProbeFaults | None = None,
        seed: int = 0,
        status_every: int = 10,
        poll_s: float = 0.01,
    ) -> None:
        self.device_id = device_id
        self.link_path = link_path
        self.clock = ScaledClock(time_scale)
        if isinstance(source, ScriptedSource | PhysicsSource):
            source.ticks = self.clock.monotonic
        self.source = source
        self._faults = faults or ProbeFaults()
        self._lock = threading.Lock()
        # Held while the firmware runs and while the port is swapped, so no frame is written
        # to a pty being closed.
        self._io_lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        rng = random.Random(seed)
        self._port = PtyUart()
        self._line = FaultyLine(lambda: self._port, self.faults, rng, self.injected, self._lock)
        self.sensor = FaultySensor(source, self.faults, rng, self.clock.monotonic)
        self.firmware = ProbeFirmware(
            device_id,
            self.clock,
            self.sensor,
            self._line,
            interval_s=interval_s,
            status_every=status_every,
        )
        self.poll_s = poll_s
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._relink()

    # -- wiring -------------------------------------------------------------------------------
    @property
    def slave_path(self) -> str:
        """The current pty slave (changes on every replug; ``link_path`` does not)."""
        return self._port.slave_path

    def faults(self) -> ProbeFaults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: ProbeFaults | None = None, **changes: object) -> ProbeFaults:
        """Replace the faults, or change some of them: ``probe.set_faults(noise_sd_c=0.5)``."""
        with self._lock:
            self._faults = replace(faults or self._faults, **changes)  # type: ignore[arg-type]
            return self._faults

    @property
    def sent(self) -> Counter[str]:
        """Valid frames written, by type (corrupted ones are in ``injected``)."""
        with self._lock:
            return Counter(self._line.sent)

    @property
    def unheard_bytes(self) -> int:
        return self._port.unheard_bytes

    def _relink(self) -> None:
        tmp = self.link_path.with_name(self.link_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self._port.slave_path)
        tmp.replace(self.link_path)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SerialProbe:
        self._thread = threading.Thread(
            target=self._run, name=f"serial-probe:{self.device_id}", daemon=True
        )
        self._thread.start()
        return self

    def halt(self, timeout: float = 5.0) -> None:
        """Stop sending (the thread ends) but keep the port open, so a reader can drain it."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close the pty and remove the link."""
        self.halt(timeout)
        with self._io_lock:
            self._port.close()
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()

    def __enter__(self) -> SerialProbe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def check(self) -> None:
        """Press the probe's check button, as staff do with it in the reference (iced water
        unless ``check_ref`` was configured): a ``CHK`` frame with what the sensor reads."""
        with self._io_lock:
            self.firmware.check()

    def unplug(self) -> None:
        """Pull the USB plug: the path disappears and the open port hangs up (EIO)."""
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()
        with self._io_lock:
            self._port.close()

    def replug(self) -> None:
        """Plug it back in: a fresh pty behind the same ``link_path``."""
        fresh = PtyUart()
        with self._io_lock:
            old, self._port = self._port, fresh
            old.close()
        self._relink()

    def _run(self) -> None:
        while not self._halt.is_set():
            master = self._port.master
            if master is not None:
                # Wake on bytes from the host (CFG) or after poll_s for the next reading. The
                # port may be unplugged meanwhile: then select fails or times out, harmlessly.
                with contextlib.suppress(OSError, ValueError):
                    select.select([master], [], [], self.poll_s)
            else:
                self._halt.wait(self.poll_s)
            with self._io_lock:
                self.firmware.poll()
