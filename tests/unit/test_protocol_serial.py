"""The serial line-frame codec and the stream splitter."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Frame, FrameError, FrameType, decode_frame, encode_frame
from protocol.serial_frames import (
    MAX_FRAME_BYTES,
    LineSplitter,
    parse_probe_check,
    parse_temperature,
)
from protocol.vector_files import Vector, load

VECTORS = load("serial")


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.valid], ids=lambda v: v.name)
def test_valid_frame_vector_decodes(vector: Vector) -> None:
    """Valid vectors decode to the type, device, seq and fields they state."""
    frame = decode_frame(vector.raw)
    assert frame.type.value == vector.meta["type"]
    assert frame.device_id == vector.meta["device_id"]
    assert frame.seq == vector.meta["seq"]
    assert list(frame.fields) == vector.meta["fields"]
    if "celsius" in vector.meta:
        assert parse_temperature(frame) == pytest.approx(vector.meta["celsius"], abs=1e-3)
    if "check_celsius" in vector.meta:
        assert list(parse_probe_check(frame)) == pytest.approx(vector.meta["check_celsius"])


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (("abc", "0.0", "C"), "not a number"),
        (("nan", "0.0", "C"), "not a number"),
        (("0.4", "inf", "C"), "not a number"),
        (("0.4", "0.0", "K"), "unit"),
        (("0.4", "999", "C"), "range"),
    ],
)
def test_a_probe_check_with_a_bad_value_is_a_bad_value(fields: tuple[str, ...], why: str) -> None:
    """A CHK frame that decodes but carries no usable temperatures (or a reference no probe
    is checked against) is dropped as bad_value."""
    with pytest.raises(FrameError, match=why) as caught:
        parse_probe_check(Frame(FrameType.CHK, "probe-1", 1, fields))
    assert caught.value.reason == "bad_value"


def test_a_check_reading_far_off_is_kept_for_the_monitor_to_judge() -> None:
    """A probe reading 999 °C in iced water is the failure a check exists to catch: parsed,
    not dropped (the monitor raises probe_inaccurate)."""
    assert parse_probe_check(Frame(FrameType.CHK, "probe-1", 1, ("999.0", "0.0", "C"))) == (
        999.0,
        0.0,
    )


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v.valid], ids=lambda v: v.name)
def test_invalid_frame_vector_is_dropped_with_its_reason(vector: Vector) -> None:
    """Invalid vectors raise FrameError with the vector's reason."""
    with pytest.raises(FrameError) as caught:
        decode_frame(vector.raw)
    assert caught.value.reason == vector.reason


field = st.from_regex(r"[A-Za-z0-9_.+-]{0,8}", fullmatch=True)


@given(
    frame_type=st.sampled_from([FrameType.TMP, FrameType.CFG]),
    device=st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True),
    seq=st.integers(min_value=0, max_value=99999),
    fields=st.tuples(field, field),
)
def test_decode_inverts_encode(
    frame_type: FrameType, device: str, seq: int, fields: tuple[str, str]
) -> None:
    """Any frame the encoder produces decodes to the same frame."""
    frame = Frame(frame_type, device, seq, fields)
    assert decode_frame(encode_frame(frame)) == frame


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(line: bytes) -> None:
    """Garbage is either a frame or a FrameError, never another exception."""
    with contextlib.suppress(FrameError):
        decode_frame(line)


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=30))
def test_splitter_keeps_valid_frames_whatever_the_chunking(chunks: list[bytes]) -> None:
    """Frames interleaved with garbage come out intact however the stream is cut."""
    good = encode_frame(Frame(FrameType.TMP, "probe-1", 3, ("4.5", "C")))
    stream = b"".join(c.replace(b"\n", b"") for c in chunks) + b"\n" + good + good
    splitter = LineSplitter()
    lines: list[bytes] = []
    for start in range(0, len(stream), 7):
        lines += splitter.feed(stream[start : start + 7])
    assert lines[-2:] == [good, good]


def test_splitter_drops_an_overlong_run_and_recovers() -> None:
    """A line longer than the limit is discarded and counted; the next frame survives."""
    good = encode_frame(Frame(FrameType.TMP, "probe-1", 4, ("5.0", "C")))
    splitter = LineSplitter()
    lines = splitter.feed(b"x" * (MAX_FRAME_BYTES * 3)) + splitter.feed(b"tail\r\n" + good)
    assert lines == [good]
    assert splitter.overlong == 1


def test_encoder_refuses_what_the_decoder_would_drop() -> None:
    """Encoding a frame with a wrong field count fails loudly instead of sending garbage."""
    with pytest.raises(FrameError):
        encode_frame(Frame(FrameType.TMP, "probe-1", 1, ("5.0",)))
