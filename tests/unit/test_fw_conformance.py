"""The firmware's own encoder and validator agree with the protocol models and shared vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_stubs import KINDS, wire
from firmware_stubs.fakes import Bench, Published
from protocol import (
    Ack,
    Birth,
    Channel,
    Command,
    DeviceEvent,
    State,
    Status,
    Telemetry,
    UnsupportedVersion,
    check_version,
    decode_message,
    parse_topic,
    topic_for,
)
from protocol.base import WireModel
from protocol.vector_files import Vector, load

MODEL_FOR: dict[Channel, type[WireModel]] = {
    Channel.BIRTH: Birth,
    Channel.STATUS: Status,
    Channel.STATE: State,
    Channel.TELEMETRY: Telemetry,
    Channel.EVENT: DeviceEvent,
    Channel.ACK: Ack,
    Channel.CMD: Command,
}
VECTORS = load("mqtt")
CMD_VECTORS = [v for v in VECTORS if v.meta["channel"] == "cmd"]
#: The fake clock sits where the vectors' commands were issued, so they are not expired.
VECTOR_TIME = 1767225600.0


def assert_conforms(message: Published) -> WireModel:
    """The message is on the right topic and validates as that channel's protocol model."""
    parts = parse_topic(message.topic)
    decoded = decode_message(MODEL_FOR[parts.channel], message.payload)
    if parts.channel in (Channel.BIRTH, Channel.STATUS, Channel.STATE):
        assert message.retain, f"{message.topic} must be retained"
    if parts.channel in (Channel.ACK, Channel.STATE, Channel.EVENT, Channel.BIRTH):
        assert message.qos == 1, f"{message.topic} must be QoS 1"
    return decoded


def exercise(bench: Bench) -> None:
    """Drive a device through everything it can say: cycles, set points, faults, door, config."""
    spec = bench.firmware.spec
    bench.run(120)
    if spec.behaviour == "cycle":
        target = (spec.min_setpoint_c + spec.max_setpoint_c) / 2
        bench.send_command(
            spec.cycle_action, {"setpoint_c": target, "duration_s": 60}, task_id="t-1", step=0
        )
        bench.sensor.temp_c = target
        bench.run(120)
        bench.send_command(spec.cycle_action, {"setpoint_c": target, "duration_s": 60})
        bench.send_command("stop")
    else:
        bench.send_command("set_point", {"setpoint_c": spec.min_setpoint_c})
        bench.send_command("stop")
    if bench.door is not None:
        bench.door.opened = True
        bench.run(1)
        bench.door.opened = False
        bench.run(1)
    bench.send_command("configure", {"telemetry_interval_s": 5, "telemetry_qos": 0})
    bench.send_command("dance")
    bench.send_command(spec.actions[0], {"setpoint_c": "hot"})
    bench.send_command("stop", expires_in=-1)
    bench.sensor.temp_c = 5000.0  # a broken thermocouple
    bench.run(60)
    bench.firmware.shutdown()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_message_the_firmware_emits_validates_against_the_protocol(kind: str) -> None:
    """Birth, status, state, telemetry, event and every ack result decode as protocol models."""
    bench = Bench(kind)
    exercise(bench)
    channels = {message.channel for message in bench.transport.sent}
    assert {"birth", "status", "state", "telemetry", "ack"} <= channels
    results = set()
    for message in bench.transport.sent:
        decoded = assert_conforms(message)
        if isinstance(decoded, Ack):
            results.add(decoded.result.value)
    expected = {"done", "rejected", "expired"}
    if bench.firmware.spec.behaviour == "cycle":
        expected.add("accepted")
    assert expected <= results


def test_the_offline_will_payload_is_a_valid_status() -> None:
    """The Last Will the transport registers decodes as Status offline."""
    bench = Bench("oven")
    status = decode_message(Status, bench.firmware.offline_status())
    assert status.state == "offline"


def test_firmware_topics_match_the_protocol_topic_tree() -> None:
    """The firmware builds the same topic as protocol.topic_for for every channel."""
    bench = Bench("fridge", kitchen_id="kitchen_7", device_id="fridge-A")
    for channel in Channel:
        assert bench.firmware.topic(channel.value) == topic_for("kitchen_7", "fridge-A", channel)


@pytest.mark.parametrize("vector", CMD_VECTORS, ids=lambda v: v.name)
def test_cmd_vectors_are_accepted_when_valid_and_refused_when_invalid(vector: Vector) -> None:
    """A valid shared cmd vector is accepted; an invalid one is rejected or dropped, never run."""
    bench = Bench("oven", now=VECTOR_TIME)
    bench.transport.clear()
    bench.firmware.on_command(vector.raw)
    acks = [m.json() for m in bench.transport.on("ack")]
    if vector.valid:
        assert [a["result"] for a in acks] == ["accepted"]
        assert bench.firmware.mode == "preheating"
    else:
        assert all(a["result"] == "rejected" for a in acks)
        assert bench.firmware.mode == "idle"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_any_shared_vector_sent_as_a_command_never_crashes_the_firmware(vector: Vector) -> None:
    """Every vector, of any channel, on the cmd topic yields at most one conforming ack."""
    bench = Bench("oven", now=VECTOR_TIME)
    bench.transport.clear()
    bench.firmware.on_command(vector.raw)
    assert len(bench.transport.sent) <= 2  # an ack, and for a cook the state change
    for message in bench.transport.sent:
        assert_conforms(message)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_firmware_decoder_drops_what_the_protocol_calls_undecodable(vector: Vector) -> None:
    """too_large / not_json / non-object vectors are dropped by the firmware for the same reason."""
    if vector.reason in ("too_large", "not_json") or vector.name == "json_array_not_object":
        with pytest.raises(wire.Dropped) as caught:
            wire.decode_object(vector.raw)
        assert caught.value.reason == vector.reason
    else:
        assert isinstance(wire.decode_object(vector.raw), dict)


def protocol_accepts_version(value: object) -> bool:
    try:
        check_version(value)
    except UnsupportedVersion:
        return False
    return True


@given(
    st.one_of(
        st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\Z"),
        st.text(alphabet="0123456789.-+ abc", max_size=8),
        st.integers(),
        st.none(),
        st.floats(allow_nan=False),
    )
)
def test_firmware_and_protocol_agree_on_which_schema_versions_are_spoken(value: object) -> None:
    """wire.version_error is None exactly when protocol.check_version accepts the value."""
    assert (wire.version_error(value) is None) == protocol_accepts_version(value)


def test_a_command_with_an_unknown_major_version_is_rejected_with_the_reason() -> None:
    """v=2.0 on cmd is answered rejected, naming the version problem."""
    bench = Bench("oven")
    payload = json.loads(bench.command("cook", {"setpoint_c": 180, "duration_s": 60}))
    payload["v"] = "2.0"
    bench.firmware.on_command(json.dumps(payload).encode())
    ack = bench.transport.last("ack")
    assert ack["result"] == "rejected"
    assert ack["reason"].startswith("unsupported_version")


def test_firmware_stubs_import_neither_pydantic_nor_protocol() -> None:
    """The firmware runs without the protocol package or pydantic (as on a microcontroller)."""
    code = (
        "import sys, firmware_stubs, firmware_stubs.fakes\n"
        "bench = firmware_stubs.fakes.Bench('oven')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'protocol'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == ""


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
command_fields = st.sampled_from(
    ["v", "command_id", "action", "params", "issued_at", "expires_at", "task_id", "step"]
)
plausible = {
    "v": st.sampled_from(["1.0", "1.3", "2.0", "x"]),
    "command_id": st.sampled_from(["c-1", "c-2", ""]),
    "action": st.sampled_from(["cook", "stop", "configure", "set_point", "chill", "dance"]),
    "params": st.dictionaries(
        st.sampled_from(["setpoint_c", "duration_s", "telemetry_interval_s", "telemetry_qos"]),
        json_values,
        max_size=3,
    ),
    "issued_at": st.sampled_from([VECTOR_TIME, -1.0, "now"]),
    "expires_at": st.sampled_from([VECTOR_TIME + 30, VECTOR_TIME - 30, None]),
    "task_id": st.sampled_from(["t-1", "", None]),
    "step": st.sampled_from([0, 2, -1, True, None]),
}


@given(
    st.sampled_from(sorted(KINDS)),
    st.lists(
        st.fixed_dictionaries({}, optional=plausible)
        | st.dictionaries(command_fields, json_values, max_size=8),
        min_size=1,
        max_size=4,
    ),
)
def test_arbitrary_commands_never_crash_and_every_answer_conforms(
    kind: str, commands: list[dict[str, object]]
) -> None:
    """Fuzzed cmd payloads: the firmware never raises and everything it says is valid."""
    bench = Bench(kind, now=VECTOR_TIME)
    for command in commands:
        bench.firmware.on_command(json.dumps(command).encode())
        bench.run(30, step_s=10)
    for message in bench.transport.sent:
        assert_conforms(message)
