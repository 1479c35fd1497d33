"""Command handling common to every device: dedupe, expiry, validation, configure, stop."""

from __future__ import annotations

import json

import pytest

from firmware_stubs import RecentCommands
from firmware_stubs.fakes import Bench

COOK = {"setpoint_c": 180, "duration_s": 600}


def test_a_repeated_command_id_resends_the_identical_ack_and_does_nothing_else() -> None:
    """The second delivery of a cook re-publishes the same ack bytes and starts no second cook."""
    bench = Bench("oven")
    payload = bench.command("cook", COOK, command_id="t-1.s0.a1")
    bench.firmware.on_command(payload)
    first = bench.transport.on("ack")[-1].payload
    sent_before = len(bench.transport.sent)
    bench.firmware.on_command(payload)
    assert [m.channel for m in bench.transport.sent[sent_before:]] == ["ack"]
    assert bench.transport.sent[-1].payload == first
    assert bench.firmware.duplicates == 1


def test_a_repeated_command_id_after_done_resends_done() -> None:
    """Once a cook is done, a retry of the same command id gets the done ack again."""
    bench = Bench("oven")
    payload = bench.command("cook", {"setpoint_c": 180, "duration_s": 60}, command_id="c-9")
    bench.firmware.on_command(payload)
    bench.sensor.temp_c = 180.0
    bench.run(61)
    done = bench.transport.last("ack")
    assert done["result"] == "done"
    bench.firmware.on_command(payload)
    assert bench.transport.last("ack") == done
    assert bench.firmware.mode == "idle"


def test_a_repeated_rejected_command_is_rejected_again_identically() -> None:
    """Dedupe covers rejections too: the same reason, the same timestamp."""
    bench = Bench("oven")
    payload = bench.command("dance", command_id="c-1")
    bench.firmware.on_command(payload)
    bench.clock.advance(10)
    bench.firmware.on_command(payload)
    first, second = bench.transport.on("ack")
    assert first.payload == second.payload


def test_a_command_past_its_expiry_is_answered_expired_and_not_run() -> None:
    """expires_at in the past: ack expired, the oven stays idle."""
    bench = Bench("oven")
    ack = bench.send_command("cook", COOK, expires_in=-0.5)
    assert ack["result"] == "expired"
    assert bench.firmware.mode == "idle"
    assert bench.element.setpoint_c is None


def test_an_unknown_action_is_rejected_with_its_name() -> None:
    """An action the kind does not have is rejected, naming the action."""
    ack = Bench("fridge").send_command("cook", COOK)
    assert ack["result"] == "rejected"
    assert ack["reason"] == "unknown_action: cook"


@pytest.mark.parametrize(
    ("params", "reason_part"),
    [
        ({"duration_s": 600}, "setpoint_c is required"),
        ({"setpoint_c": "hot", "duration_s": 600}, "setpoint_c is required"),
        ({"setpoint_c": 900, "duration_s": 600}, "setpoint_c must be between"),
        ({"setpoint_c": 180, "duration_s": -1}, "duration_s must be between"),
        ({"setpoint_c": True, "duration_s": 600}, "setpoint_c is required"),
        ({"setpoint_c": 180, "duration_s": 600, "humidity_pct": 40}, "unknown parameter"),
    ],
)
def test_bad_cook_parameters_are_rejected_and_nothing_heats(
    params: dict[str, object], reason_part: str
) -> None:
    """Missing, mistyped, out-of-range or unknown parameters: rejected invalid_params."""
    bench = Bench("oven")
    ack = bench.send_command("cook", params)
    assert ack["result"] == "rejected"
    assert ack["reason"].startswith("invalid_params")
    assert reason_part in ack["reason"]
    assert bench.element.setpoint_c is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"action":"cook"}',
        b'{"command_id":"","action":"cook"}',
        b'{"command_id":7,"action":"cook"}',
        b"{" + b" " * (64 * 1024) + b"}",
    ],
)
def test_payloads_without_a_usable_command_id_are_dropped_and_counted(payload: bytes) -> None:
    """No ack can be addressed, so nothing is published; the drop is counted by reason."""
    bench = Bench("oven")
    bench.transport.clear()
    bench.firmware.on_command(payload)
    assert bench.transport.sent == []
    assert sum(bench.firmware.dropped.values()) == 1


def test_a_malformed_command_with_an_id_is_rejected_naming_the_field() -> None:
    """A command id with a bad expires_at is answered rejected invalid_message."""
    bench = Bench("oven")
    message = json.loads(bench.command("cook", COOK, command_id="c-1"))
    message["expires_at"] = "soon"
    bench.firmware.on_command(json.dumps(message).encode())
    ack = bench.transport.last("ack")
    assert ack["result"] == "rejected"
    assert ack["reason"] == "invalid_message: expires_at must be unix seconds"


def test_configure_changes_the_telemetry_interval() -> None:
    """After configure telemetry_interval_s=5, readings come every 5 device seconds."""
    bench = Bench("fridge", temp_c=3.0)
    assert bench.send_command("configure", {"telemetry_interval_s": 5})["result"] == "done"
    bench.transport.clear()
    bench.run(20)
    assert len(bench.transport.on("telemetry")) == 4


@pytest.mark.parametrize(
    "params", [{}, {"telemetry_interval_s": 0}, {"telemetry_qos": 2}, {"colour": "red"}]
)
def test_configure_rejects_nothing_or_bad_settings(params: dict[str, object]) -> None:
    """Empty, out-of-range or unknown settings are rejected and nothing changes."""
    bench = Bench("fridge")
    ack = bench.send_command("configure", params)
    assert ack["result"] == "rejected"
    assert bench.firmware.telemetry_interval_s == bench.firmware.spec.telemetry_interval_s


def test_every_state_telemetry_and_event_carries_the_next_device_seq() -> None:
    """seq is one counter across state, telemetry and event, increasing by one."""
    bench = Bench("oven")
    bench.send_command("cook", {"setpoint_c": 180, "duration_s": 60})
    bench.door.opened = True  # type: ignore[union-attr]
    bench.sensor.temp_c = 180.0
    bench.run(200)
    seqs = [
        m.json()["seq"]
        for m in bench.transport.sent
        if m.channel in ("state", "telemetry", "event")
    ]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_recent_commands_forget_the_oldest_beyond_capacity() -> None:
    """The dedupe memory is bounded: the oldest command id goes first."""
    recent = RecentCommands(capacity=2)
    recent.remember("a", b"1")
    recent.remember("b", b"2")
    recent.remember("a", b"3")
    recent.remember("c", b"4")
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (b"3", None, b"4")
    assert len(recent) == 2
