"""The scenarios' kitchens and menu, as data: the demo's menu plus a cold station with a manual
step (staff confirm it) and a fridge with a probe for food-safety scenarios.

Cooking steps last real seconds (as in :mod:`simulators.demo_menu`); the fridge runs on
kitchen-day time (its device's ``time_scale`` is the scenario's compression factor).
"""

from __future__ import annotations

from typing import Any

from simulators.demo_menu import EQUIPMENT as DEMO_EQUIPMENT
from simulators.demo_menu import SKUS as DEMO_SKUS
from simulators.demo_menu import STATIONS as DEMO_STATIONS
from simulators.staff import ManualRecipe, StaffMember

STATIONS: list[dict[str, Any]] = [
    *DEMO_STATIONS,
    {"id": "cold-prep", "name": "Cold prep", "slots": 2},
]

#: (device id, kind, station): cooking equipment on real seconds, holding on kitchen-day time.
COOKING: list[tuple[str, str, str]] = list(DEMO_EQUIPMENT)
HOLDING: list[tuple[str, str, str]] = [("fridge-1", "fridge", "cold-prep")]
EQUIPMENT: list[tuple[str, str, str]] = COOKING + HOLDING

SALAD: dict[str, Any] = {
    "id": "caesar-salad",
    "name": "Caesar salad",
    "station_id": "cold-prep",
    "steps": [
        {
            "name": "assemble",
            "equipment_kind": None,
            "action": "assemble",
            "setpoint_c": None,
            "duration_s": 1,
            "manual": True,
            "min_core_temp_c": None,
        }
    ],
    "freshness_window_min": 30,
    "priority": "low",
    "hold": "cold",
}

SKUS: list[dict[str, Any]] = [*DEMO_SKUS, SALAD]

#: Manual steps by SKU, for the staff simulation.
MANUAL: dict[str, ManualRecipe] = {
    sku["id"]: ManualRecipe(tuple(i for i, step in enumerate(sku["steps"]) if step["manual"]))
    for sku in SKUS
    if any(step["manual"] for step in sku["steps"])
}

#: Each kitchen's staff: quick on average, one of them on a break part of the run (seconds).
ROSTER: tuple[StaffMember, ...] = (
    StaffMember("B-101", mean_delay_s=0.8, sd_delay_s=0.4),
    StaffMember("B-102", mean_delay_s=1.5, sd_delay_s=0.8, absences=((10.0, 20.0),)),
)

#: FDA Food Code cold holding limit, for the temperature chart.
COLD_HOLDING_LIMIT_C = 5.0
