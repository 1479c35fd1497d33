"""Equipment faults as the firmware reports them: a dead element, a warm fridge."""

from __future__ import annotations

from firmware_stubs.fakes import Bench


def events(bench: Bench) -> list[str]:
    return [m.json()["event"] for m in bench.transport.on("event")]


def test_oven_that_cannot_reach_its_set_point_raises_element_fault_and_rejects() -> None:
    """After max_approach_s below the set point: element_fault event, ack rejected, idle."""
    bench = Bench("oven")
    bench.send_command("cook", {"setpoint_c": 180, "duration_s": 600}, command_id="t.s0.a1")
    bench.run(bench.firmware.spec.max_approach_s - 10, step_s=10)
    assert bench.transport.last("ack")["result"] == "accepted"
    bench.run(20, step_s=10)
    ack = bench.transport.last("ack")
    assert (ack["result"], ack["reason"]) == ("rejected", "element_fault")
    assert "element_fault" in events(bench)
    fault = [m.json() for m in bench.transport.on("event")][-1]
    assert fault["severity"] == "critical"
    assert fault["data"]["command_id"] == "t.s0.a1"
    assert bench.firmware.mode == "idle"


def test_repeated_command_after_element_fault_repeats_the_rejection() -> None:
    """The same command id after the fault gets the rejected ack again, not a second cycle."""
    bench = Bench("oven")
    bench.send_command("cook", {"setpoint_c": 180, "duration_s": 60}, command_id="t.s0.a1")
    bench.run(bench.firmware.spec.max_approach_s + 10, step_s=10)
    again = bench.send_command("cook", {"setpoint_c": 180, "duration_s": 60}, command_id="t.s0.a1")
    assert again["result"] == "rejected"
    assert bench.firmware.mode == "idle"


def test_fridge_out_of_band_for_the_alarm_delay_raises_one_temperature_alarm() -> None:
    """A fridge at 9 °C for alarm_delay_s raises temperature_alarm once, critical."""
    bench = Bench("fridge", temp_c=3.0)
    bench.sensor.temp_c = 9.0
    bench.run(bench.firmware.spec.alarm_delay_s - 5, step_s=5)
    assert "temperature_alarm" not in events(bench)
    bench.run(600, step_s=5)
    assert events(bench).count("temperature_alarm") == 1
    alarm = [m.json() for m in bench.transport.on("event")][-1]
    assert alarm["severity"] == "critical"
    assert alarm["data"] == {"temp_c": 9.0, "setpoint_c": 3.0}


def test_fridge_back_in_band_raises_temperature_restored() -> None:
    """After an alarm, a reading back within the band raises temperature_restored."""
    bench = Bench("fridge", temp_c=3.0)
    bench.sensor.temp_c = 12.0
    bench.run(bench.firmware.spec.alarm_delay_s + 5, step_s=5)
    bench.sensor.temp_c = 4.0
    bench.run(5, step_s=5)
    assert events(bench)[-2:] == ["temperature_alarm", "temperature_restored"]


def test_short_excursion_below_the_delay_raises_nothing() -> None:
    """A door opening that warms the fridge briefly is not an alarm."""
    bench = Bench("fridge", temp_c=3.0)
    bench.sensor.temp_c = 8.0
    bench.run(120, step_s=5)
    bench.sensor.temp_c = 3.5
    bench.run(600, step_s=5)
    assert "temperature_alarm" not in events(bench)


def test_configure_sets_how_long_a_cycle_may_take_to_reach_its_set_point() -> None:
    """configure max_approach_s=10: the element fault shows after 10 s, not the kind's 1800."""
    bench = Bench("oven")
    assert bench.send_command("configure", {"max_approach_s": 10})["result"] == "done"
    bench.send_command("cook", {"setpoint_c": 180, "duration_s": 60}, command_id="t.s0.a1")
    bench.run(10)
    assert bench.transport.last("ack")["reason"] == "element_fault"
