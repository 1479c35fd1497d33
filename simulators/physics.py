"""A pure first-order thermal model of a piece of kitchen equipment and the food in it.

The chamber (cavity, oil, cabinet air) approaches the element's set point with time constant
``tau_s`` while the element is on, and drifts towards ambient with ``idle_tau_s`` while it is
off. An open door adds a second loss towards ambient (``door_tau_s``); the two pulls combine
into one linear ODE whose exact solution is used, so any step length is stable and the result
depends only on the inputs. Loading product mixes its temperature into the chamber, and the
product's core follows the chamber with ``core_tau_s``.

>>> plant = PLANTS["oven"]
>>> warm = step(Thermal(temp_c=22.0), plant, dt_s=600.0, setpoint_c=180.0)
>>> 170.0 < warm.temp_c < 180.0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class PlantParams:
    """The thermal character of one kind of equipment."""

    ambient_c: float = 22.0
    #: Time constant towards the set point with the element on.
    tau_s: float = 180.0
    #: Time constant towards ambient with the element off (insulation).
    idle_tau_s: float = 1800.0
    #: Extra loss towards ambient while the door is open.
    door_tau_s: float = 300.0
    #: How fast the product's core follows the chamber.
    core_tau_s: float = 600.0
    #: Temperature of product as it is loaded, and the share of the chamber's heat it takes.
    load_temp_c: float = 4.0
    load_fraction: float = 0.15


#: Plant parameters per device kind (the firmware's kind table has the control side).
PLANTS: dict[str, PlantParams] = {
    "oven": PlantParams(tau_s=180.0, core_tau_s=600.0, load_temp_c=4.0, load_fraction=0.2),
    "grill": PlantParams(tau_s=120.0, core_tau_s=240.0, load_temp_c=4.0, load_fraction=0.15),
    "fryer": PlantParams(tau_s=150.0, core_tau_s=90.0, load_temp_c=-18.0, load_fraction=0.1),
    "blast_chiller": PlantParams(
        tau_s=240.0, door_tau_s=200.0, core_tau_s=900.0, load_temp_c=70.0, load_fraction=0.3
    ),
    "fridge": PlantParams(tau_s=600.0, idle_tau_s=3600.0, door_tau_s=240.0, core_tau_s=1800.0),
    "freezer": PlantParams(tau_s=900.0, idle_tau_s=7200.0, door_tau_s=300.0, core_tau_s=3600.0),
    "hot_hold": PlantParams(
        tau_s=300.0, door_tau_s=240.0, core_tau_s=900.0, load_temp_c=75.0, load_fraction=0.1
    ),
}


@dataclass(frozen=True, slots=True)
class Thermal:
    """Chamber temperature and, once product is loaded, the product's core temperature."""

    temp_c: float
    core_c: float | None = None


def relax(value: float, target: float, dt_s: float, tau_s: float) -> float:
    """``value`` after ``dt_s`` seconds of first-order approach to ``target``."""
    if dt_s <= 0:
        return value
    return target + (value - target) * math.exp(-dt_s / tau_s)


def equilibrium(
    plant: PlantParams, setpoint_c: float | None, door_open: bool
) -> tuple[float, float]:
    """Where the chamber is heading and the rate (1/s) it gets there.

    Two linear pulls ``a*(target - T)`` and ``b*(ambient - T)`` add up to
    ``(a + b)*(T* - T)`` with ``T* = (a*target + b*ambient) / (a + b)``.
    """
    target = plant.ambient_c if setpoint_c is None else setpoint_c
    pull = 1.0 / (plant.idle_tau_s if setpoint_c is None else plant.tau_s)
    loss = 1.0 / plant.door_tau_s if door_open else 0.0
    rate = pull + loss
    return (pull * target + loss * plant.ambient_c) / rate, rate


def step(
    state: Thermal,
    plant: PlantParams,
    *,
    dt_s: float,
    setpoint_c: float | None,
    door_open: bool = False,
) -> Thermal:
    """The state ``dt_s`` seconds later, with the element at ``setpoint_c`` (``None`` = off)."""
    settle_at, rate = equilibrium(plant, setpoint_c, door_open)
    temp = relax(state.temp_c, settle_at, dt_s, 1.0 / rate)
    core = None if state.core_c is None else relax(state.core_c, temp, dt_s, plant.core_tau_s)
    return Thermal(temp_c=temp, core_c=core)


def load(state: Thermal, plant: PlantParams) -> Thermal:
    """Put cold (or hot) product in: the chamber gives up some heat, the core starts at load."""
    mixed = state.temp_c + plant.load_fraction * (plant.load_temp_c - state.temp_c)
    return replace(state, temp_c=mixed, core_c=plant.load_temp_c)


def unload(state: Thermal) -> Thermal:
    """Take the product out: there is no core to measure any more."""
    return replace(state, core_c=None)
