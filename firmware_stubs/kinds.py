"""What each kind of kitchen equipment is, as data: one row per kind, no class per kind.

A row says which behaviour runs the device (``cycle``: reach a set point, run for a duration,
report done; ``hold``: keep a set point and report readings), which actions it answers, its set
point limits and defaults. Adding a kind is adding a row.

>>> KINDS["fryer"].actions
('cook', 'stop', 'configure')
>>> spec_for("fridge").default_setpoint_c
3.0
"""

CYCLE = "cycle"
HOLD = "hold"


class KindSpec:
    """One kind of equipment: its behaviour, actions, limits and defaults (read-only by use)."""

    def __init__(
        self,
        kind: str,
        behaviour: str,
        model: str,
        metric: str,
        min_setpoint_c: float,
        max_setpoint_c: float,
        default_setpoint_c: float | None = None,
        cycle_action: str = "cook",
        approach_mode: str = "preheating",
        run_mode: str = "cooking",
        ready_band_c: float = 2.0,
        max_duration_s: float = 6 * 3600.0,
        telemetry_interval_s: float = 30.0,
        has_door: bool = True,
        has_core_probe: bool = False,
        max_approach_s: float = 1800.0,
        alarm_band_c: float = 3.0,
        alarm_delay_s: float = 300.0,
    ) -> None:
        self.kind = kind
        self.behaviour = behaviour
        self.model = model
        #: Name of the main temperature reading in telemetry.
        self.metric = metric
        self.min_setpoint_c = min_setpoint_c
        self.max_setpoint_c = max_setpoint_c
        #: Held when no cycle runs (a fryer keeps its oil hot, a fridge its air cold);
        #: ``None`` means the element is off at rest (an oven between cooks).
        self.default_setpoint_c = default_setpoint_c
        self.cycle_action = cycle_action
        #: Modes of a cycle: while reaching the set point, then while running the duration.
        self.approach_mode = approach_mode
        self.run_mode = run_mode
        #: A cycle starts its duration once the measured temperature is this close to target.
        self.ready_band_c = ready_band_c
        self.max_duration_s = max_duration_s
        self.telemetry_interval_s = telemetry_interval_s
        #: Fitted hardware: a door switch, a core probe for the product.
        self.has_door = has_door
        self.has_core_probe = has_core_probe
        #: A cycle that has not reached its set point after this long has a failed element
        #: (heater or compressor): the device raises ``element_fault`` and gives the cycle up.
        self.max_approach_s = max_approach_s
        #: Holding equipment raises ``temperature_alarm`` when the measured temperature has
        #: been more than ``alarm_band_c`` from the set point for ``alarm_delay_s``.
        self.alarm_band_c = alarm_band_c
        self.alarm_delay_s = alarm_delay_s
        if behaviour == CYCLE:
            self.actions = (cycle_action, "stop", "configure")
        else:
            self.actions = ("set_point", "stop", "configure")


KINDS = {
    spec.kind: spec
    for spec in (
        KindSpec("oven", CYCLE, "Brigade Combi 6", "cavity_temp", 30.0, 300.0, has_core_probe=True),
        KindSpec(
            "grill",
            CYCLE,
            "Brigade Contact Grill",
            "plate_temp",
            80.0,
            300.0,
            has_door=False,
            has_core_probe=True,
        ),
        KindSpec(
            "fryer",
            CYCLE,
            "Brigade Fryer 18L",
            "oil_temp",
            100.0,
            190.0,
            default_setpoint_c=150.0,
            has_door=False,
        ),
        KindSpec(
            "blast_chiller",
            CYCLE,
            "Brigade Blast 10",
            "air_temp",
            -40.0,
            10.0,
            cycle_action="chill",
            approach_mode="cooling",
            run_mode="cooling",
            ready_band_c=3.0,
            has_core_probe=True,
            max_approach_s=3600.0,
        ),
        KindSpec(
            "fridge",
            HOLD,
            "Brigade Reach-in 600",
            "air_temp",
            -2.0,
            10.0,
            default_setpoint_c=3.0,
            telemetry_interval_s=60.0,
        ),
        KindSpec(
            "freezer",
            HOLD,
            "Brigade Reach-in 600F",
            "air_temp",
            -30.0,
            -10.0,
            default_setpoint_c=-18.0,
            telemetry_interval_s=60.0,
        ),
        KindSpec(
            "hot_hold",
            HOLD,
            "Brigade Hot Hold 4",
            "cabinet_temp",
            57.0,
            95.0,
            default_setpoint_c=70.0,
        ),
    )
}


def spec_for(kind: str) -> KindSpec:
    """The row for ``kind``; ``ValueError`` names the kinds that exist."""
    if kind not in KINDS:
        raise ValueError("unknown device kind " + repr(kind) + "; known: " + ", ".join(KINDS))
    return KINDS[kind]
