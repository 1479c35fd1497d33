"""The pure parts of the device simulator: backoff, scaled clock, plant adapters, CLI help."""

from __future__ import annotations

import doctest
import importlib

import pytest
from typer.testing import CliRunner

from simulators import devices, physics
from simulators.cli import app


def test_reconnect_delay_doubles_and_is_capped() -> None:
    """0.25, 0.5, 1, 2, 4 then 5 s for ever (and no overflow for huge attempt counts)."""
    delays = [devices.reconnect_delay(n) for n in range(8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert devices.reconnect_delay(10_000) == 5.0


def test_scaled_clock_runs_the_tick_counter_faster_but_keeps_wall_time() -> None:
    """At 600x, 0.5 real seconds are 300 device seconds; now() stays real unix time."""
    real = [100.0]
    clock = devices.ScaledClock(600.0, wall=lambda: 1767225600.0 + real[0], ticks=lambda: real[0])
    real[0] += 0.5
    assert clock.monotonic() == 300.0
    assert clock.now() == 1767225700.5


def test_scaled_clock_refuses_a_non_positive_scale() -> None:
    """time_scale 0 would freeze every cycle: refused."""
    with pytest.raises(ValueError, match="positive"):
        devices.ScaledClock(0)


def test_the_plant_advances_to_the_tick_counter_with_the_element_target() -> None:
    """SimulatedPlant steps physics by the elapsed device time towards its set point."""
    plant = devices.SimulatedPlant(physics.PLANTS["oven"], 22.0, monotonic=0.0)
    plant.set_target(180.0)
    plant.advance(600.0)
    expected = physics.step(
        physics.Thermal(22.0), physics.PLANTS["oven"], dt_s=600.0, setpoint_c=180.0
    )
    assert plant.read() == expected.temp_c


def test_the_core_probe_reads_the_chamber_until_product_is_loaded() -> None:
    """No product: the probe hangs in the chamber air; loaded: it reads the core."""
    plant = devices.SimulatedPlant(physics.PLANTS["oven"], 150.0, monotonic=0.0)
    probe = devices.CoreProbe(plant)
    assert probe.read() == 150.0
    plant.state = physics.load(plant.state, plant.params)
    assert probe.read() == plant.params.load_temp_c


@pytest.mark.parametrize("argv", [["--help"], ["device", "--help"]])
def test_every_cli_command_has_help(argv: list[str]) -> None:
    """brigade-sim and each command print help with an example."""
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0
    assert "Usage" in result.output
    if argv[0] == "device":
        assert "brigade-sim device --kind oven" in result.output


def test_the_device_command_refuses_an_unknown_kind() -> None:
    """--kind toaster: exit 2 naming the kinds that exist."""
    result = CliRunner().invoke(
        app, ["device", "--kind", "toaster", "--kitchen", "k1", "--id", "t"]
    )
    assert result.exit_code == 2
    assert "oven" in result.output


@pytest.mark.parametrize(
    "module",
    [
        "firmware_stubs",
        "firmware_stubs.wire",
        "firmware_stubs.kinds",
        "firmware_stubs.fakes",
        "firmware_stubs.oven",
        "firmware_stubs.fridge",
        "simulators.physics",
        "simulators.devices",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    """The examples in the public docstrings are true."""
    failed, _ = doctest.testmod(importlib.import_module(module))
    assert failed == 0


def test_a_device_can_be_given_its_own_plant_and_starts_at_its_resting_temperature() -> None:
    """plant= overrides the kind's physics; a fridge starts at its set point, an oven at ambient."""
    quick = physics.PlantParams(tau_s=1.0, ambient_c=18.0)
    oven = devices.SimulatedDevice("oven", "k1", "oven-1", plant=quick)
    fridge = devices.SimulatedDevice("fridge", "k1", "fridge-1")
    assert oven.plant.params is quick
    assert (oven.temp_c, fridge.temp_c) == (18.0, 3.0)
