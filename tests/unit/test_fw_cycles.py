"""Cycle and holding behaviour of the firmware, on a fake clock."""

from __future__ import annotations

import pytest

from firmware_stubs import KINDS
from firmware_stubs.fakes import Bench


def modes(bench: Bench) -> list[str]:
    return [m.json()["mode"] for m in bench.transport.on("state")]


def test_oven_cook_preheats_then_cooks_for_the_duration_then_reports_done() -> None:
    """accepted -> preheating until within 2 °C -> cooking 600 s -> done with core temp -> idle."""
    bench = Bench("oven")
    ack = bench.send_command(
        "cook",
        {"setpoint_c": 180, "duration_s": 600},
        command_id="t-1.s0.a1",
        task_id="t-1",
        step=0,
    )
    assert ack["result"] == "accepted"
    assert bench.element.setpoint_c == 180.0
    bench.sensor.temp_c = 177.9
    bench.run(300)
    assert bench.firmware.mode == "preheating"
    bench.sensor.temp_c = 178.0
    bench.run(1)
    assert bench.firmware.mode == "cooking"
    bench.core.temp_c = 74.6  # type: ignore[union-attr]
    bench.run(599)
    assert bench.transport.last("ack")["result"] == "accepted"
    bench.run(1)
    done = bench.transport.last("ack")
    assert done["result"] == "done"
    assert done["command_id"] == "t-1.s0.a1"
    assert done["data"] == {"core_temp_c": 74.6}
    assert bench.firmware.mode == "idle"
    assert bench.element.setpoint_c is None
    assert modes(bench)[-3:] == ["preheating", "cooking", "idle"]


def test_state_carries_the_batch_reference_while_cooking() -> None:
    """task_id, step and command_id are in state during the cycle, with the remaining time."""
    bench = Bench("oven")
    bench.send_command(
        "cook",
        {"setpoint_c": 200, "duration_s": 120},
        command_id="t-7.s2.a1",
        task_id="t-7",
        step=2,
    )
    bench.sensor.temp_c = 200.0
    bench.run(30)
    state = bench.transport.last("state")
    assert (state["task_id"], state["step"], state["command_id"]) == ("t-7", 2, "t-7.s2.a1")
    assert state["mode"] == "cooking"
    assert 0 < state["remaining_s"] <= 120


def test_a_second_cook_while_busy_is_rejected_busy() -> None:
    """A different command id while a cycle runs is rejected busy; the first cycle continues."""
    bench = Bench("oven")
    bench.send_command("cook", {"setpoint_c": 180, "duration_s": 600}, command_id="a")
    ack = bench.send_command("cook", {"setpoint_c": 220, "duration_s": 60}, command_id="b")
    assert ack["result"] == "rejected"
    assert ack["reason"].startswith("busy")
    assert bench.element.setpoint_c == 180.0
    assert bench.firmware.cycle is not None and bench.firmware.cycle["command_id"] == "a"  # type: ignore[attr-defined]


def test_stop_abandons_the_cycle_with_an_event_and_switches_off() -> None:
    """stop: ack done, a cycle_abandoned event with the batch reference, element off."""
    bench = Bench("oven")
    bench.send_command(
        "cook", {"setpoint_c": 180, "duration_s": 600}, command_id="a", task_id="t-1"
    )
    ack = bench.send_command("stop")
    assert ack["result"] == "done"
    event = bench.transport.last("event")
    assert event["event"] == "cycle_abandoned"
    assert event["data"] == {"command_id": "a", "task_id": "t-1"}
    assert (bench.firmware.mode, bench.element.setpoint_c) == ("off", None)
    assert bench.send_command("cook", {"setpoint_c": 180, "duration_s": 60})["result"] == "accepted"


def test_fryer_holds_its_oil_at_standby_and_returns_to_holding_after_a_cook() -> None:
    """A fryer rests holding 150 °C, cooks at the commanded oil temperature, then holds again."""
    bench = Bench("fryer", temp_c=150.0)
    assert (bench.firmware.mode, bench.element.setpoint_c) == ("holding", 150.0)
    bench.send_command("cook", {"setpoint_c": 175, "duration_s": 180})
    bench.sensor.temp_c = 174.0
    bench.run(181)
    assert bench.transport.last("ack")["result"] == "done"
    assert "data" not in bench.transport.last("ack")  # no core probe in a fryer
    assert (bench.firmware.mode, bench.element.setpoint_c) == ("holding", 150.0)


def test_blast_chiller_chills_to_the_set_point_then_runs_the_duration() -> None:
    """chill: cooling until within 3 °C of target, then the duration, then done."""
    bench = Bench("blast_chiller", temp_c=20.0)
    assert (
        bench.send_command("chill", {"setpoint_c": -20, "duration_s": 600})["result"] == "accepted"
    )
    bench.sensor.temp_c = -16.0
    bench.run(10)
    assert bench.firmware.cycle["ends_at"] is None  # type: ignore[attr-defined]
    bench.sensor.temp_c = -17.5
    bench.run(1)
    bench.run(599)
    assert bench.transport.last("ack")["result"] == "accepted"
    bench.run(1)
    assert bench.transport.last("ack")["result"] == "done"
    assert bench.firmware.mode == "idle"


def test_fridge_holds_its_default_set_point_and_reports_air_temperature() -> None:
    """A fridge boots holding 3 °C and publishes air_temp readings every interval."""
    bench = Bench("fridge", temp_c=3.4)
    assert (bench.firmware.mode, bench.element.setpoint_c) == ("holding", 3.0)
    bench.transport.clear()
    bench.run(180)
    telemetry = bench.transport.on("telemetry")
    assert len(telemetry) == 3
    readings = {r["metric"]: r["value"] for r in telemetry[-1].json()["readings"]}
    assert readings["air_temp"] == 3.4
    assert readings["door_open"] == 0


def test_fridge_set_point_changes_the_target_and_is_done_at_once() -> None:
    """set_point within range: ack done with the new target; out of range: rejected."""
    bench = Bench("fridge")
    assert bench.send_command("set_point", {"setpoint_c": 1.5})["data"] == {"setpoint_c": 1.5}
    assert bench.element.setpoint_c == 1.5
    assert bench.transport.last("state")["setpoint_c"] == 1.5
    assert bench.send_command("set_point", {"setpoint_c": 12})["result"] == "rejected"
    assert bench.element.setpoint_c == 1.5


def test_opening_and_closing_the_door_raises_events_and_updates_state() -> None:
    """door_open then door_closed events, and state.door_open follows the switch."""
    bench = Bench("fridge")
    bench.door.opened = True  # type: ignore[union-attr]
    bench.run(1)
    assert bench.transport.last("event")["event"] == "door_open"
    assert bench.transport.last("state")["door_open"] is True
    bench.door.opened = False  # type: ignore[union-attr]
    bench.run(1)
    assert bench.transport.last("event")["event"] == "door_closed"
    assert bench.transport.last("state")["door_open"] is False


def test_an_implausible_reading_is_left_out_and_raises_a_sensor_fault() -> None:
    """A sensor reading 5000 °C is not a temperature: omitted, and one sensor_fault event."""
    bench = Bench("fryer")
    bench.sensor.temp_c = 5000.0
    bench.transport.clear()
    bench.run(60)
    for message in bench.transport.on("telemetry"):
        assert "oil_temp" not in {r["metric"] for r in message.json()["readings"]}
    assert bench.firmware.temp_c is None
    faults = [m.json() for m in bench.transport.on("event")]
    assert [(e["event"], e["severity"]) for e in faults] == [("sensor_fault", "critical")]


def test_a_sensor_that_recovers_raises_sensor_restored() -> None:
    """After a fault, the first plausible reading is reported as sensor_restored."""
    bench = Bench("fridge")
    bench.sensor.temp_c = float("nan")
    bench.run(1)
    bench.sensor.temp_c = 3.0
    bench.run(1)
    events = [m.json()["event"] for m in bench.transport.on("event")]
    assert events == ["sensor_fault", "sensor_restored"]
    assert bench.firmware.temp_c == 3.0


def test_nothing_but_birth_goes_out_before_the_first_announce() -> None:
    """A booted but unannounced device publishes nothing; announce starts with birth."""
    bench = Bench("oven")
    firmware = bench.firmware
    firmware._announced = False
    bench.transport.clear()
    bench.run(120)
    assert bench.transport.sent == []
    firmware.announce()
    assert [m.channel for m in bench.transport.sent] == ["birth", "status", "state"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_advertises_its_actions_in_birth(kind: str) -> None:
    """birth capabilities list every action of the kind's table row."""
    bench = Bench(kind)
    birth = bench.transport.on("birth")[0].json()
    assert birth["kind"] == kind
    assert set(KINDS[kind].actions) <= set(birth["capabilities"])
