"""A serial temperature probe: NMEA-style line frames over a UART (MicroPython-compatible).

The probe sends ``$TMP,<id>,<seq>,<value>,<unit>*HH`` every ``interval_s``, a ``STA`` frame
(state, battery %) every ``status_every`` readings and an ``ERR`` frame (``open_circuit``) when
its sensor cannot be read; it answers each ``CFG`` frame (``key,value``) with an ``ACK``
(``ok``/``err``). Its check button (:meth:`ProbeFirmware.check`) sends ``CHK`` (reading,
reference, unit): staff put the probe in a reference, iced water at 0 °C unless ``check_ref``
was configured (boiling water, say), and press it. One ``seq`` counts every frame it sends.
Bytes it cannot parse are dropped and counted, never answered. A board's main loop::

    probe = ProbeFirmware("probe-1", clock, thermocouple, uart)
    while True:
        probe.poll()

>>> from firmware_stubs.fakes import ManualClock, Thermometer
>>> uart = MemoryUart()
>>> probe = ProbeFirmware("probe-1", ManualClock(), Thermometer(3.5), uart)
>>> probe.poll()
>>> uart.sent
[b'$TMP,probe-1,1,3.5,C*65\\r\\n']
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware_stubs.hal import Clock, TemperatureSensor, Uart

#: Longest frame on the wire including ``\r\n`` (protocol.serial_frames.MAX_FRAME_BYTES).
MAX_FRAME_BYTES = 96
FIELD_COUNTS = {"TMP": 2, "STA": 2, "CFG": 2, "ACK": 2, "ERR": 1, "CHK": 3}
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_FIELD_CHARS = _ID_CHARS + ".+"
MAX_DEVICE_ID = 32
#: Numeric configuration keys and the bounds of their values; ``unit`` takes one of UNITS.
NUMERIC_LIMITS = {
    "interval_s": (0.05, 3600.0),
    "status_every": (1.0, 10000.0),
    "check_ref": (-60.0, 400.0),
}
UNITS = ("C", "F")


def checksum(body: bytes) -> int:
    """XOR of every byte between ``$`` and ``*``."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def encode_frame(kind: str, device_id: str, seq: int, fields: "tuple[str, ...]") -> bytes:
    """One frame line with its checksum and ``\\r\\n``.

    >>> encode_frame("TMP", "probe-1", 7, ("3.5", "C"))
    b'$TMP,probe-1,7,3.5,C*63\\r\\n'
    """
    # Concatenation and %-formatting: small MicroPython ports lack f-strings and [*x] displays.
    body = ",".join([kind, device_id, str(seq)] + list(fields)).encode()  # noqa: RUF005
    return b"$" + body + b"*" + ("%02X" % checksum(body)).encode() + b"\r\n"  # noqa: UP031


def decode_line(line: bytes) -> "tuple[str, str, int, tuple[str, ...]] | None":
    """``(type, device, seq, fields)`` of a valid line, or ``None`` (the probe never says why:
    it has no one to tell; the host side gives reasons)."""
    line = line.rstrip(b"\r\n")
    if len(line) + 2 > MAX_FRAME_BYTES or not line.startswith(b"$"):
        return None
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 3:
        return None
    body = line[1:star]
    for byte in line:
        if byte > 127:
            return None
    try:
        if int(line[star + 1 :], 16) != checksum(body):
            return None
        parts = body.decode().split(",")
    except (ValueError, UnicodeError):
        return None
    expected = FIELD_COUNTS.get(parts[0])
    if expected is None or len(parts) != 3 + expected or not parts[2].isdigit():
        return None
    if not _only(parts[1], _ID_CHARS) or not 1 <= len(parts[1]) <= MAX_DEVICE_ID:
        return None
    for field in parts[3:]:
        if not _only(field, _FIELD_CHARS):
            return None
    return parts[0], parts[1], int(parts[2]), tuple(parts[3:])


def _only(text: str, allowed: str) -> bool:
    return all(char in allowed for char in text)


def format_value(value: float) -> str:
    """A reading with one decimal, as probes print them (``-18.2``, ``3.5``)."""
    tenths = round(value * 10)
    sign = "-" if tenths < 0 else ""
    tenths = abs(tenths)
    return sign + str(tenths // 10) + "." + str(tenths % 10)


class MemoryUart:
    """A UART in memory: ``sent`` holds each write, ``incoming`` what the host will send."""

    def __init__(self) -> None:
        self.sent = []  # type: list[bytes]
        self.incoming = b""

    def write(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def read(self) -> bytes:
        data, self.incoming = self.incoming, b""
        return data


class ProbeFirmware:
    """The probe's logic over a clock, a sensor and a UART (``write(bytes)``, ``read()`` that
    returns what is waiting, possibly ``b""`` or ``None``)."""

    def __init__(
        self,
        device_id: str,
        clock: "Clock",
        sensor: "TemperatureSensor",
        uart: "Uart",
        interval_s: float = 5.0,
        unit: str = "C",
        status_every: int = 10,
        battery_pct: int = 100,
    ) -> None:
        self.device_id = device_id
        self.clock = clock
        self.sensor = sensor
        self.uart = uart
        self.interval_s = interval_s
        self.unit = unit
        self.status_every = status_every
        self.battery_pct = battery_pct
        self.check_ref = 0.0  # °C: the ice point
        self.seq = 0
        self.readings_sent = 0
        self.sensor_ok = True
        self.dropped_lines = 0
        self._pending = b""
        self._discarding = False
        self._next_at = None  # type: float | None

    # -- output -------------------------------------------------------------------------------
    def send(self, kind: str, fields: "tuple[str, ...]") -> None:
        self.seq += 1
        self.uart.write(encode_frame(kind, self.device_id, self.seq, fields))

    def read_sensor(self) -> "float | None":
        """The sensor's value in the probe's unit, or None once ``ERR open_circuit`` is sent."""
        try:
            value = self.sensor.read()  # type: float | None
        except OSError:
            value = None
        if value is None:
            self.sensor_ok = False
            self.send("ERR", ("open_circuit",))
            return None
        self.sensor_ok = True
        return self.in_unit(value)

    def in_unit(self, celsius: float) -> float:
        return celsius * 9.0 / 5.0 + 32.0 if self.unit == "F" else celsius

    def send_reading(self) -> None:
        value = self.read_sensor()
        if value is None:
            return
        self.send("TMP", (format_value(value), self.unit))
        self.readings_sent += 1
        if self.readings_sent % self.status_every == 0:
            self.send("STA", ("ok", str(self.battery_pct)))

    def check(self) -> None:
        """The check button: the reading and the reference, in the probe's unit."""
        value = self.read_sensor()
        if value is None:
            return
        reference = self.in_unit(self.check_ref)
        self.send("CHK", (format_value(value), format_value(reference), self.unit))

    # -- input --------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the host: complete lines are handled, an overlong run is discarded."""
        self._pending += data
        while True:
            newline = self._pending.find(b"\n")
            if newline < 0:
                if len(self._pending) > MAX_FRAME_BYTES:
                    self.dropped_lines += 1
                    self._pending = b""
                    self._discarding = True
                return
            line, self._pending = self._pending[: newline + 1], self._pending[newline + 1 :]
            if self._discarding:
                self._discarding = False
                continue
            self.handle_line(line)

    def handle_line(self, line: bytes) -> None:
        frame = decode_line(line)
        if frame is None or frame[0] != "CFG":
            self.dropped_lines += 1
            return
        key, value = frame[3]
        self.send("ACK", (key, "ok" if self.configure(key, value) else "err"))

    def configure(self, key: str, value: str) -> bool:
        """Apply one setting; False if the key is unknown or the value out of bounds."""
        if key == "unit":
            if value not in UNITS:
                return False
            self.unit = value
            return True
        limits = NUMERIC_LIMITS.get(key)
        if limits is None:
            return False
        try:
            number = float(value)
        except ValueError:
            return False
        if not limits[0] <= number <= limits[1]:
            return False
        if key == "check_ref":
            self.check_ref = number
        elif key == "interval_s":
            self.interval_s = number
            # The new interval counts from now, as a probe restarts its timer on configuration.
            self._next_at = self.clock.monotonic() + number
        else:
            self.status_every = int(number)
        return True

    # -- main loop ----------------------------------------------------------------------------
    def poll(self) -> None:
        """One pass of the main loop: answer the host, then send a reading if one is due."""
        data = self.uart.read()
        if data:
            self.feed(data)
        now = self.clock.monotonic()
        if self._next_at is None or now >= self._next_at:
            self.send_reading()
            # Catch up without a burst after a stall: the next reading is one interval from now.
            self._next_at = now + self.interval_s
