"""The demo's kitchens and menu, as data.

Recipe durations are short, real seconds (no time compression), so that a 30-second demo cooks
real batches end to end with every plane's clocks in agreement.
"""

from __future__ import annotations

from typing import Any

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
