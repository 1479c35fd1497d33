"""The demo's kitchens and menu, as data.

Recipe durations are short, real seconds (no time compression), so that a 30-second demo cooks
real batches end to end with every plane's clocks in agreement.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from simulators.physics import PLANTS, PlantParams


def demo_plant(kind: str) -> PlantParams:
    """Equipment that heats in about a second: the demo's recipes last seconds, not minutes, and
    a real oven's 15-minute preheat would hide the flow the demo is there to show."""
    return replace(PLANTS[kind], tau_s=0.5, core_tau_s=1.0)


STATIONS: list[dict[str, Any]] = [
    {"id": "hot-line", "name": "Hot line", "slots": 2},
    {"id": "fry", "name": "Fry station", "slots": 1},
]

#: (device id, kind, station) of the simulated equipment in every demo kitchen.
EQUIPMENT: list[tuple[str, str, str]] = [
    ("oven-1", "oven", "hot-line"),
    ("oven-2", "oven", "hot-line"),
    ("fryer-1", "fryer", "fry"),
]

SKUS: list[dict[str, Any]] = [
    {
        "id": "roast-chicken",
        "name": "Roast chicken thigh",
        "station_id": "hot-line",
        "steps": [
            {
                "name": "roast",
                "equipment_kind": "oven",
                "action": "cook",
                "setpoint_c": 200,
                "duration_s": 3,
                "manual": False,
                "min_core_temp_c": 74,
            }
        ],
        "freshness_window_min": 30,
        "priority": "normal",
        "hold": "hot",
    },
    {
        "id": "veg-lasagne",
        "name": "Vegetable lasagne",
        "station_id": "hot-line",
        "steps": [
            {
                "name": "bake",
                "equipment_kind": "oven",
                "action": "cook",
                "setpoint_c": 180,
                "duration_s": 4,
                "manual": False,
                "min_core_temp_c": 74,
            }
        ],
        "freshness_window_min": 45,
        "priority": "normal",
        "hold": "hot",
    },
    {
        "id": "fries",
        "name": "Fries",
        "station_id": "fry",
        "steps": [
            {
                "name": "fry",
                "equipment_kind": "fryer",
                "action": "cook",
                "setpoint_c": 175,
                "duration_s": 2,
                "manual": False,
                "min_core_temp_c": None,
            }
        ],
        "freshness_window_min": 15,
        "priority": "high",
        "hold": "hot",
    },
]
