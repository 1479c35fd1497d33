"""Properties of the first-order thermal model."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from simulators import physics

temps = st.floats(min_value=-40.0, max_value=300.0, allow_nan=False)
setpoints = st.one_of(st.none(), temps)
durations = st.floats(min_value=0.0, max_value=7200.0, allow_nan=False)
plants = st.sampled_from(sorted(physics.PLANTS.items()))


@given(plants, temps, setpoints, durations)
def test_temperature_stays_between_start_and_target_without_disturbance(
    named: tuple[str, physics.PlantParams], start: float, setpoint: float | None, dt: float
) -> None:
    """With the door shut, the chamber never overshoots its target nor moves away from it."""
    _, plant = named
    target = plant.ambient_c if setpoint is None else setpoint
    after = physics.step(physics.Thermal(start), plant, dt_s=dt, setpoint_c=setpoint)
    assert min(start, target) - 1e-9 <= after.temp_c <= max(start, target) + 1e-9


@given(plants, temps, temps, st.lists(durations, min_size=2, max_size=8))
def test_approach_to_the_set_point_is_monotone(
    named: tuple[str, physics.PlantParams], start: float, setpoint: float, steps: list[float]
) -> None:
    """Each step leaves the chamber no further from the set point than the step before."""
    _, plant = named
    state = physics.Thermal(start)
    distance = abs(start - setpoint)
    for dt in steps:
        state = physics.step(state, plant, dt_s=dt, setpoint_c=setpoint)
        assert abs(state.temp_c - setpoint) <= distance + 1e-9
        distance = abs(state.temp_c - setpoint)


@given(plants, temps, temps, durations, durations)
def test_two_short_steps_equal_one_long_step(
    named: tuple[str, physics.PlantParams], start: float, setpoint: float, a: float, b: float
) -> None:
    """The exact solution makes the result independent of how time is sliced."""
    _, plant = named
    split = physics.step(physics.Thermal(start), plant, dt_s=a, setpoint_c=setpoint)
    split = physics.step(split, plant, dt_s=b, setpoint_c=setpoint)
    whole = physics.step(physics.Thermal(start), plant, dt_s=a + b, setpoint_c=setpoint)
    assert math.isclose(split.temp_c, whole.temp_c, rel_tol=1e-9, abs_tol=1e-9)


@given(plants, temps, setpoints, durations)
def test_the_model_is_deterministic(
    named: tuple[str, physics.PlantParams], start: float, setpoint: float | None, dt: float
) -> None:
    """The same inputs give the same state, bit for bit."""
    _, plant = named
    first = physics.step(physics.Thermal(start, 4.0), plant, dt_s=dt, setpoint_c=setpoint)
    second = physics.step(physics.Thermal(start, 4.0), plant, dt_s=dt, setpoint_c=setpoint)
    assert first == second


def test_an_open_door_slows_a_hot_oven_towards_ambient() -> None:
    """Door open: after the same time, the oven is cooler than with the door shut."""
    plant = physics.PLANTS["oven"]
    hot = physics.Thermal(180.0)
    shut = physics.step(hot, plant, dt_s=120, setpoint_c=200.0)
    opened = physics.step(hot, plant, dt_s=120, setpoint_c=200.0, door_open=True)
    assert opened.temp_c < shut.temp_c


def test_an_open_door_warms_a_fridge_above_its_set_point_for_good() -> None:
    """With the door left open the fridge settles between its set point and the kitchen air."""
    plant = physics.PLANTS["fridge"]
    settled = physics.step(physics.Thermal(3.0), plant, dt_s=1e6, setpoint_c=3.0, door_open=True)
    assert 3.0 < settled.temp_c < plant.ambient_c


def test_a_load_of_cold_product_drops_the_oven_and_starts_the_core_cold() -> None:
    """Loading mixes cold product into the chamber; the core then follows the chamber up."""
    plant = physics.PLANTS["oven"]
    loaded = physics.load(physics.Thermal(180.0), plant)
    assert loaded.temp_c < 180.0
    assert loaded.core_c == plant.load_temp_c
    later = physics.step(loaded, plant, dt_s=600, setpoint_c=180.0)
    assert later.core_c is not None and plant.load_temp_c < later.core_c < later.temp_c
    assert physics.unload(later).core_c is None


def test_with_the_element_off_the_chamber_drifts_to_ambient() -> None:
    """No set point: an oven at 180 °C cools towards the kitchen's ambient temperature."""
    plant = physics.PLANTS["oven"]
    cooled = physics.step(physics.Thermal(180.0), plant, dt_s=1e6, setpoint_c=None)
    assert math.isclose(cooled.temp_c, plant.ambient_c, abs_tol=1e-6)
