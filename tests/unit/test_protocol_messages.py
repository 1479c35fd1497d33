"""The MQTT message models against the shared vectors and the versioning rules."""

from __future__ import annotations

import pytest

from protocol import (
    Ack,
    Birth,
    Command,
    DeviceEvent,
    MessageError,
    State,
    Status,
    Telemetry,
    UnsupportedVersion,
    check_version,
    command_id_for,
    decode_message,
    encode_message,
)
from protocol.base import WireModel
from protocol.errors import ProtocolError
from protocol.vector_files import Vector, load

MODELS: dict[str, type[WireModel]] = {
    "birth": Birth,
    "status": Status,
    "state": State,
    "telemetry": Telemetry,
    "event": DeviceEvent,
    "cmd": Command,
    "ack": Ack,
}
VECTORS = load("mqtt")


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.valid], ids=lambda v: v.name)
def test_valid_vector_decodes_and_round_trips(vector: Vector) -> None:
    """Every valid vector decodes, and re-encoding then decoding gives the same message."""
    model = MODELS[vector.meta["channel"]]
    message = decode_message(model, vector.raw)
    assert decode_message(model, encode_message(message)) == message


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v.valid], ids=lambda v: v.name)
def test_invalid_vector_is_refused_with_its_reason(vector: Vector) -> None:
    """Every invalid vector raises a ProtocolError whose reason is the one the vector names."""
    with pytest.raises(ProtocolError) as caught:
        decode_message(MODELS[vector.meta["channel"]], vector.raw)
    assert caught.value.reason == vector.reason


def test_every_channel_has_valid_and_invalid_vectors() -> None:
    """The shared vectors cover at least one valid case per channel."""
    channels = {v.meta["channel"] for v in VECTORS if v.valid}
    assert channels == set(MODELS)
    assert sum(not v.valid for v in VECTORS) >= 10


def test_unknown_major_version_names_the_supported_one() -> None:
    """An unknown major version is refused with a message that says what this side speaks."""
    with pytest.raises(UnsupportedVersion, match=r"speaks 1\.x"):
        check_version("2.3")


def test_unknown_optional_field_is_tolerated() -> None:
    """A newer minor's extra field does not break an older reader."""
    status = decode_message(Status, b'{"v":"1.4","state":"online","new_field":[1,2]}')
    assert status.state == "online"


def test_missing_version_defaults_to_current() -> None:
    """A message without ``v`` is read as the current version (old firmware)."""
    assert decode_message(Status, b'{"state":"offline"}').v == "1.0"


def test_command_ids_are_deterministic_per_task_step_and_attempt() -> None:
    """The same task, step and attempt always give the same command id; others differ."""
    assert command_id_for("t-1", 2, 1) == command_id_for("t-1", 2, 1)
    assert len({command_id_for("t-1", s, a) for s in range(3) for a in range(3)}) == 9


def test_error_message_points_at_the_bad_field() -> None:
    """A schema error says which field is wrong."""
    with pytest.raises(MessageError, match="result"):
        decode_message(Ack, b'{"command_id":"c","device_id":"d","result":"maybe","ts":1}')


def test_a_message_nested_thousands_deep_is_invalid_not_a_crash() -> None:
    """30,000 nested brackets fit in the size limit and overflow the JSON parser's recursion:
    refused as ``invalid_message`` like any other bad message, never a RecursionError."""
    raw = b'{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    with pytest.raises(MessageError, match="nests too deeply") as caught:
        decode_message(Telemetry, raw)
    assert caught.value.reason == "invalid_message"
