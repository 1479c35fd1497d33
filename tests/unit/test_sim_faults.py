"""Physical faults of simulated equipment: a dead element, door openings, loading product."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simulators import physics
from simulators.devices import SimulatedDevice, SimulatedPlant

FRIDGE = physics.PLANTS["fridge"]
OVEN = physics.PLANTS["oven"]


def test_failed_compressor_lets_the_fridge_warm_towards_ambient() -> None:
    """With the element failed the set point has no effect: the fridge drifts to ambient."""
    plant = SimulatedPlant(FRIDGE, 3.0, 0.0)
    plant.set_target(3.0)
    plant.element_failed = True
    plant.advance(3600.0)
    assert plant.read() > 8.0
    plant.element_failed = False
    plant.advance(3600.0 * 6)
    assert abs(plant.read() - 3.0) < 1.0


def test_failed_heating_element_keeps_the_oven_at_ambient() -> None:
    """An oven asked for 180 °C with a dead element stays near the kitchen's ambient."""
    plant = SimulatedPlant(OVEN, 22.0, 0.0)
    plant.set_target(180.0)
    plant.element_failed = True
    plant.advance(1800.0)
    assert abs(plant.read() - 22.0) < 0.5


def test_open_door_warms_a_fridge_faster_than_a_closed_one() -> None:
    """A door left open for ten minutes costs more than the closed fridge's drift."""
    closed = physics.step(physics.Thermal(3.0), FRIDGE, dt_s=600, setpoint_c=3.0)
    opened = physics.step(physics.Thermal(3.0), FRIDGE, dt_s=600, setpoint_c=3.0, door_open=True)
    assert opened.temp_c > closed.temp_c + 1.0


def test_loading_cold_product_cools_a_hot_oven_and_starts_the_core_cold() -> None:
    """Loading mixes the product's temperature into the chamber; the core starts at load."""
    loaded = physics.load(physics.Thermal(180.0), OVEN)
    assert loaded.temp_c < 180.0
    assert loaded.core_c == OVEN.load_temp_c


def test_simulated_device_fault_switches_drive_its_plant() -> None:
    """fail_element/repair_element and load_product act on the device's plant."""
    oven = SimulatedDevice("oven", "k1", "oven-1")
    oven.fail_element()
    assert oven.plant.element_failed
    oven.load_product()
    assert oven.plant.state.core_c == oven.plant.params.load_temp_c
    oven.repair_element()
    assert not oven.plant.element_failed


@given(
    start=st.floats(min_value=-30, max_value=250),
    setpoint=st.one_of(st.none(), st.floats(min_value=-30, max_value=250)),
    dt=st.floats(min_value=0, max_value=1e6),
)
def test_a_failed_element_never_moves_the_chamber_away_from_ambient(
    start: float, setpoint: float | None, dt: float
) -> None:
    """Whatever the set point, a dead element only brings the chamber closer to ambient."""
    plant = SimulatedPlant(FRIDGE, start, 0.0)
    plant.set_target(setpoint)
    plant.element_failed = True
    plant.advance(dt)
    ambient = FRIDGE.ambient_c
    assert abs(plant.read() - ambient) <= abs(start - ambient) + 1e-9
