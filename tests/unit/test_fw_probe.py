"""The probe firmware: frames the protocol's reader accepts, CFG answered with ACK, bad input
dropped and counted, readings on its interval."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_stubs.fakes import ManualClock, Thermometer
from firmware_stubs.probe import MemoryUart, ProbeFirmware, decode_line, encode_frame, format_value
from protocol import FrameError, FrameType, decode_frame
from protocol.serial_frames import parse_probe_check, parse_temperature
from protocol.vector_files import Vector, load


class BrokenSensor:
    def read(self) -> float:
        raise OSError(5, "open circuit")


def probe_with(
    temp_c: float = 3.5, *, interval_s: float = 5.0, status_every: int = 10
) -> tuple[ProbeFirmware, ManualClock, MemoryUart]:
    clock, uart = ManualClock(), MemoryUart()
    probe = ProbeFirmware(
        "probe-1",
        clock,
        Thermometer(temp_c),
        uart,
        interval_s=interval_s,
        status_every=status_every,
    )
    return probe, clock, uart


def test_reading_frames_decode_with_the_protocol_reader() -> None:
    """A TMP frame from the firmware decodes with protocol.decode_frame to the sensor value."""
    probe, _, uart = probe_with(-18.24)
    probe.poll()
    frame = decode_frame(uart.sent[0])
    assert frame.type is FrameType.TMP
    assert (frame.device_id, frame.seq) == ("probe-1", 1)
    assert parse_temperature(frame) == pytest.approx(-18.2)


@pytest.mark.parametrize("vector", load("serial"), ids=lambda v: v.name)
def test_firmware_frame_reader_agrees_with_shared_vectors(vector: Vector) -> None:
    """The firmware's own line decoder accepts exactly the shared vectors marked valid."""
    decoded = decode_line(vector.raw)
    if vector.valid:
        assert decoded is not None
        assert decoded[0] == vector.meta["type"]
        assert list(decoded[3]) == vector.meta["fields"]
    else:
        assert decoded is None


@pytest.mark.parametrize(
    "vector",
    [v for v in load("serial") if v.valid and "lowercase" not in v.name],
    ids=lambda v: v.name,
)
def test_firmware_encoder_reproduces_valid_vectors(vector: Vector) -> None:
    """encode_frame writes the vector's line byte for byte."""
    meta = vector.meta
    line = encode_frame(meta["type"], meta["device_id"], meta["seq"], tuple(meta["fields"]))
    assert line == vector.raw


def test_readings_follow_the_interval() -> None:
    """One TMP at once, the next only after interval_s has passed on the tick counter."""
    probe, clock, uart = probe_with(interval_s=5.0)
    probe.poll()
    clock.advance(4.9)
    probe.poll()
    assert len(uart.sent) == 1
    clock.advance(0.1)
    probe.poll()
    assert [decode_frame(f).seq for f in uart.sent] == [1, 2]


def test_status_frame_every_n_readings() -> None:
    """Every status_every-th reading is followed by a STA frame with the battery level."""
    probe, clock, uart = probe_with(status_every=2, interval_s=1.0)
    for _ in range(2):
        probe.poll()
        clock.advance(1.0)
    types = [decode_frame(f).type for f in uart.sent]
    assert types == [FrameType.TMP, FrameType.TMP, FrameType.STA]
    assert decode_frame(uart.sent[2]).fields == ("ok", "100")


def test_sensor_error_sends_err_open_circuit() -> None:
    """An unreadable sensor gives an ERR open_circuit frame instead of a reading."""
    clock, uart = ManualClock(), MemoryUart()
    probe = ProbeFirmware("probe-1", clock, BrokenSensor(), uart)
    probe.poll()
    frame = decode_frame(uart.sent[0])
    assert (frame.type, frame.fields) == (FrameType.ERR, ("open_circuit",))


def test_cfg_interval_is_acked_ok_and_applied() -> None:
    """CFG interval_s,2 is answered ACK interval_s,ok and readings then come every 2 s."""
    probe, clock, uart = probe_with(interval_s=60.0)
    probe.poll()
    uart.incoming = encode_frame("CFG", "agent", 0, ("interval_s", "2"))
    probe.poll()
    ack = decode_frame(uart.sent[1])
    assert (ack.type, ack.fields) == (FrameType.ACK, ("interval_s", "ok"))
    clock.advance(2.0)
    probe.poll()
    assert decode_frame(uart.sent[2]).type is FrameType.TMP


@pytest.mark.parametrize(
    ("key", "value"), [("interval_s", "0"), ("interval_s", "abc"), ("colour", "red"), ("unit", "K")]
)
def test_cfg_with_unknown_key_or_bad_value_is_acked_err(key: str, value: str) -> None:
    """A CFG the probe cannot apply is answered ACK key,err and changes nothing."""
    probe, _, uart = probe_with(interval_s=5.0)
    probe.feed(encode_frame("CFG", "agent", 0, (key, value)))
    assert decode_frame(uart.sent[0]).fields == (key, "err")
    assert probe.interval_s == 5.0


def test_the_check_button_sends_the_reading_against_the_ice_point() -> None:
    """CHK carries what the sensor reads and the reference, 0 °C unless configured."""
    probe, _, uart = probe_with(0.8)
    probe.check()
    frame = decode_frame(uart.sent[0])
    assert (frame.type, frame.seq) == (FrameType.CHK, 1)
    assert parse_probe_check(frame) == (0.8, 0.0)


def test_a_configured_reference_and_unit_are_used_by_the_check() -> None:
    """After CFG check_ref,100 and unit,F a check in boiling water reads back in °C."""
    probe, _, uart = probe_with(99.5)
    probe.feed(encode_frame("CFG", "agent", 0, ("check_ref", "100")))
    probe.feed(encode_frame("CFG", "agent", 0, ("unit", "F")))
    probe.check()
    frame = decode_frame(uart.sent[2])
    assert frame.fields[2] == "F"
    assert parse_probe_check(frame) == pytest.approx((99.5, 100.0), abs=0.06)


def test_the_check_of_a_broken_sensor_is_a_sensor_error() -> None:
    """No reading, no check: the probe reports open_circuit instead."""
    clock, uart = ManualClock(), MemoryUart()
    ProbeFirmware("probe-1", clock, BrokenSensor(), uart).check()
    assert decode_frame(uart.sent[0]).fields == ("open_circuit",)


def test_fahrenheit_unit_converts_the_reading() -> None:
    """After CFG unit,F the probe reports in °F, which the reader converts back to °C."""
    probe, _, uart = probe_with(74.0)
    probe.feed(encode_frame("CFG", "agent", 0, ("unit", "F")))
    probe.poll()
    frame = decode_frame(uart.sent[1])
    assert frame.fields[1] == "F"
    assert parse_temperature(frame) == pytest.approx(74.0, abs=0.1)


def test_garbage_and_overlong_input_is_dropped_and_counted() -> None:
    """Noise, a bad checksum and an overlong run from the host are dropped and counted."""
    probe, _, uart = probe_with()
    probe.feed(b"\xff\x00noise\r\n")
    probe.feed(b"$CFG,agent,0,interval_s,5*00\r\n")
    probe.feed(b"$" + b"9" * 200)
    probe.feed(b"tail\r\n" + encode_frame("CFG", "agent", 0, ("interval_s", "5")))
    assert probe.dropped_lines == 3
    assert decode_frame(uart.sent[-1]).fields == ("interval_s", "ok")


@given(st.floats(min_value=-60.0, max_value=400.0, allow_nan=False))
def test_formatted_values_round_to_a_tenth(value: float) -> None:
    """format_value prints the value to the nearest tenth, in a field the reader accepts."""
    text = format_value(value)
    assert abs(float(text) - value) <= 0.05 + 1e-9
    decode_frame(encode_frame("TMP", "p", 1, (text, "C")))


@given(st.binary(max_size=400))
def test_any_bytes_from_the_host_never_crash_the_probe(data: bytes) -> None:
    """Whatever arrives, the probe only ever answers with frames the reader accepts."""
    probe, _, uart = probe_with()
    probe.feed(data)
    for line in uart.sent:
        try:
            decode_frame(line)
        except FrameError as exc:  # pragma: no cover - the assertion message says what broke
            raise AssertionError(f"probe sent an invalid frame {line!r}: {exc}") from exc
