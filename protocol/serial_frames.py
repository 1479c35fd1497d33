"""Serial line frames for probes and older equipment (NMEA style).

A frame is one ASCII line ``$<TYPE>,<device>,<seq>,<fields...>*<XOR checksum, 2 hex>\\r\\n``; the
checksum is the XOR of every byte between ``$`` and ``*``.

>>> encode_frame(Frame(FrameType.TMP, "probe-1", 7, ("3.5", "C")))
b'$TMP,probe-1,7,3.5,C*63\\r\\n'
>>> decode_frame(b'$TMP,probe-1,7,3.5,C*63\\r\\n').fields
('3.5', 'C')

Anything else is a :class:`FrameError` whose ``reason`` says why, so a reader drops and counts it
and never crashes. :class:`LineSplitter` turns an arbitrary byte stream (partial reads, garbage,
missing newlines) into candidate lines without ever buffering more than one frame's worth.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import FrameError

#: Longest accepted frame including ``\r\n`` (NMEA allows 82; we allow room for config values).
MAX_FRAME_BYTES = 96
_DEVICE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_FIELD = re.compile(r"^[A-Za-z0-9_.+-]{0,24}$")


class FrameType(StrEnum):
    """Frame types; the number of fields after ``seq`` is fixed per type."""

    TMP = "TMP"  # probe -> host: temperature reading (value, unit C|F)
    STA = "STA"  # probe -> host: status (state, battery %)
    CFG = "CFG"  # host -> probe: set configuration (key, value)
    ACK = "ACK"  # probe -> host: configuration result (key, ok|err)
    ERR = "ERR"  # probe -> host: sensor error (code)
    CHK = "CHK"  # probe -> host: accuracy check against a reference (reading, reference, unit)


FIELD_COUNTS: dict[FrameType, int] = {
    FrameType.TMP: 2,
    FrameType.STA: 2,
    FrameType.CFG: 2,
    FrameType.ACK: 2,
    FrameType.ERR: 1,
    FrameType.CHK: 3,
}


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame."""

    type: FrameType
    device_id: str
    seq: int
    fields: tuple[str, ...]


def checksum(body: bytes) -> int:
    """XOR of every byte of ``body`` (the part between ``$`` and ``*``)."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def encode_frame(frame: Frame) -> bytes:
    """Encode ``frame``; raise :class:`FrameError` if it would not decode on the other side."""
    expected = FIELD_COUNTS[frame.type]
    if len(frame.fields) != expected:
        raise FrameError(
            f"{frame.type} frames carry {expected} fields, got {len(frame.fields)}",
            reason="bad_field_count",
        )
    if not _DEVICE.match(frame.device_id):
        raise FrameError(f"bad device id {frame.device_id!r}", reason="bad_device")
    for field in frame.fields:
        if not _FIELD.match(field):
            raise FrameError(f"bad field {field!r}", reason="bad_field")
    body = ",".join([frame.type.value, frame.device_id, str(frame.seq), *frame.fields]).encode()
    line = b"$" + body + b"*" + f"{checksum(body):02X}".encode() + b"\r\n"
    if len(line) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(line)} bytes is too long", reason="overlong")
    return line


def decode_frame(line: bytes) -> Frame:
    """Decode one line (with or without its ``\\r\\n``)."""
    if len(line) > MAX_FRAME_BYTES:
        raise FrameError(f"line of {len(line)} bytes exceeds {MAX_FRAME_BYTES}", reason="overlong")
    line = line.rstrip(b"\r\n")
    if not line.isascii():
        raise FrameError("line contains non-ASCII bytes", reason="non_ascii")
    if not line.startswith(b"$"):
        raise FrameError("line does not start with '$'", reason="no_start")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 3:
        raise FrameError("line has no '*HH' checksum suffix", reason="no_checksum")
    body, given = line[1:star], line[star + 1 :]
    try:
        given_value = int(given, 16)
    except ValueError as exc:
        raise FrameError(f"checksum {given!r} is not hex", reason="no_checksum") from exc
    if given_value != checksum(body):
        raise FrameError(
            f"checksum {given.decode()} != computed {checksum(body):02X}", reason="bad_checksum"
        )
    parts = body.decode("ascii").split(",")
    try:
        frame_type = FrameType(parts[0])
    except ValueError as exc:
        raise FrameError(f"unknown frame type {parts[0]!r}", reason="unknown_type") from exc
    expected = FIELD_COUNTS[frame_type]
    if len(parts) != 3 + expected:
        raise FrameError(
            f"{frame_type} frame has {len(parts) - 3} fields, expected {expected}",
            reason="bad_field_count",
        )
    device_id, seq_text, fields = parts[1], parts[2], tuple(parts[3:])
    if not _DEVICE.match(device_id):
        raise FrameError(f"bad device id {device_id!r}", reason="bad_device")
    if not seq_text.isdigit() or len(seq_text) > 10:
        raise FrameError(f"bad sequence number {seq_text!r}", reason="bad_seq")
    for field in fields:
        if not _FIELD.match(field):
            raise FrameError(f"bad field {field!r}", reason="bad_field")
    return Frame(type=frame_type, device_id=device_id, seq=int(seq_text), fields=fields)


def parse_temperature(frame: Frame) -> float:
    """The temperature of a ``TMP`` frame in degrees Celsius.

    Raises :class:`FrameError` (``bad_value``) for a non-number, an unknown unit or a value no
    kitchen probe can read (-60..400 °C).
    """
    if frame.type is not FrameType.TMP:
        raise FrameError(f"{frame.type} frame carries no temperature", reason="bad_value")
    text, unit = frame.fields
    return _celsius(text, unit)


def parse_probe_check(frame: Frame) -> tuple[float, float]:
    """``(reading, reference)`` in degrees Celsius of a ``CHK`` frame: staff put the probe in a
    reference (iced water, 0 °C) and pressed its check button.

    >>> parse_probe_check(Frame(FrameType.CHK, "probe-1", 3, ("32.9", "32.0", "F")))
    (0.5, 0.0)

    Raises :class:`FrameError` (``bad_value``) for a non-number, an unknown unit or a
    reference no probe could be checked against (-60..400 °C). The reading itself may be
    anything finite: a probe reading 900 °C in iced water is exactly what a check must catch.
    """
    if frame.type is not FrameType.CHK:
        raise FrameError(f"{frame.type} frame carries no probe check", reason="bad_value")
    reading, reference, unit = frame.fields
    # Rounded to the millidegree: a Fahrenheit probe's 32.9 is 0.5 °C, not 0.50000000001.
    return (
        round(_celsius(reading, unit, bounded=False), 3),
        round(_celsius(reference, unit), 3),
    )


def _celsius(text: str, unit: str, *, bounded: bool = True) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise FrameError(f"temperature {text!r} is not a number", reason="bad_value") from exc
    if not math.isfinite(value):
        raise FrameError(f"temperature {text!r} is not a number", reason="bad_value")
    if unit == "F":
        value = (value - 32.0) * 5.0 / 9.0
    elif unit != "C":
        raise FrameError(f"unknown temperature unit {unit!r}", reason="bad_value")
    if bounded and not -60.0 <= value <= 400.0:
        raise FrameError(f"temperature {value:.1f} °C is out of range", reason="bad_value")
    return value


class LineSplitter:
    """Incremental splitter of a serial byte stream into candidate frame lines.

    ``feed`` returns complete lines; a run of bytes longer than :data:`MAX_FRAME_BYTES` without a
    newline is discarded up to the next newline and reported once as ``overlong``.

    >>> s = LineSplitter()
    >>> s.feed(b"$TMP,p,1,")
    []
    >>> s.feed(b"3.5,C*00\\r\\nnext")
    [b'$TMP,p,1,3.5,C*00\\r\\n']
    """

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._discarding = False
        self.overlong = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the complete lines they finish."""
        lines: list[bytes] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            piece = chunk[start:] if newline < 0 else chunk[start : newline + 1]
            if self._discarding:
                if newline >= 0:
                    self._discarding = False
            else:
                self._buffer += piece
                if len(self._buffer) > self._limit:
                    self.overlong += 1
                    self._buffer.clear()
                    self._discarding = newline < 0
                elif newline >= 0:
                    lines.append(bytes(self._buffer))
                    self._buffer.clear()
            if newline < 0:
                return lines
            start = newline + 1
