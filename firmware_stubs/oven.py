"""Cycle equipment: ovens, grills and fryers cook, blast chillers chill.

``cook {setpoint_c, duration_s}`` (``chill`` on a blast chiller) is answered ``accepted``; the
device drives to the set point (``preheating``), and once the measured temperature is within
the kind's ready band it runs the duration (``cooking``), then answers ``done`` with
``data={"core_temp_c": ...}`` when it has a core probe and returns to rest (an oven idles with
the element off, a fryer holds its oil at the standby set point). While a cycle runs, ``state``
carries its ``command_id``, ``task_id`` and ``step``: the batch reference kept with the
temperatures. A second cycle command while busy is rejected ``busy``. A cycle that cannot reach
its set point within ``max_approach_s`` (the kind's, or as configured; a dead heating element
or compressor) raises an ``element_fault`` event (critical) and is answered ``rejected``
(``element_fault``): the device did not cook the batch, and says so rather than hold it forever.

>>> from firmware_stubs.fakes import Element, ManualClock, RecordingTransport, Thermometer
>>> from firmware_stubs.kinds import spec_for
>>> oven = CycleFirmware(spec_for("oven"), "k1", "oven-1", ManualClock(), Thermometer(),
...                      Element(), RecordingTransport())
>>> oven.boot(); oven.announce(); oven.mode
'idle'
"""

from firmware_stubs import wire
from firmware_stubs.core import Firmware

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware_stubs.hal import JsonObject


class CycleFirmware(Firmware):
    """Reach a set point, run for a duration, report done; one cycle at a time."""

    #: The running cycle: command_id, task_id, step, setpoint_c, duration_s, ends_at.
    cycle = None  # type: JsonObject | None

    def behaviour_handlers(self) -> "dict[str, Callable[[JsonObject], None]]":
        return {self.spec.cycle_action: self.do_cycle}

    def rest(self) -> None:
        if self.spec.default_setpoint_c is None:
            self.set_point(None, "idle")
        else:
            self.set_point(self.spec.default_setpoint_c, "holding")

    def do_cycle(self, command: "JsonObject") -> None:
        params = command["params"]
        wire.reject_unknown_params(params, ("setpoint_c", "duration_s"))
        setpoint = wire.number_param(
            params, "setpoint_c", self.spec.min_setpoint_c, self.spec.max_setpoint_c
        )
        duration = wire.number_param(params, "duration_s", 0.0, self.spec.max_duration_s)
        if self.cycle is not None:
            raise wire.Rejected("busy: running " + self.cycle["command_id"])
        self.cycle = {
            "command_id": command["command_id"],
            "task_id": command["task_id"],
            "step": command["step"],
            "setpoint_c": setpoint,
            "duration_s": duration,
            "ends_at": None,
            "approach_deadline": self.clock.monotonic() + self.max_approach_s,
        }
        self.send_ack(command["command_id"], "accepted")
        self.set_point(setpoint, self.spec.approach_mode)
        self.advance()

    def advance(self) -> None:
        cycle = self.cycle
        if cycle is None:
            return
        now = self.clock.monotonic()
        if cycle["ends_at"] is None:
            if (
                self.temp_c is None
                or abs(self.temp_c - cycle["setpoint_c"]) > self.spec.ready_band_c
            ):
                if now >= cycle["approach_deadline"]:
                    self.element_fault(cycle)
                return
            cycle["ends_at"] = now + cycle["duration_s"]
            self.set_point(cycle["setpoint_c"], self.spec.run_mode)
            if self.spec.run_mode == self.spec.approach_mode:
                self.publish_state()
        if now >= cycle["ends_at"]:
            self.cycle = None
            core = self.core_temp()
            evidence = None if core is None else {"core_temp_c": core}
            self.send_ack(cycle["command_id"], "done", None, evidence)
            self.rest()

    def element_fault(self, cycle: "JsonObject") -> None:
        """The set point was not reached in time: report the fault and give the cycle up."""
        self.cycle = None
        detail = "set point " + str(cycle["setpoint_c"]) + " not reached; at " + str(self.temp_c)
        batch = {"command_id": cycle["command_id"], "setpoint_c": cycle["setpoint_c"]}
        if cycle["task_id"] is not None:
            batch["task_id"] = cycle["task_id"]
        self.publish_event("element_fault", "critical", detail, batch)
        self.send_ack(cycle["command_id"], "rejected", "element_fault")
        self.rest()

    def abandon(self, why: str) -> None:
        cycle = self.cycle
        if cycle is None:
            return
        self.cycle = None
        batch = {"command_id": cycle["command_id"]}
        if cycle["task_id"] is not None:
            batch["task_id"] = cycle["task_id"]
        self.publish_event("cycle_abandoned", "warning", why, batch)

    def state_extras(self) -> "JsonObject":
        cycle = self.cycle
        if cycle is None:
            return {}
        if cycle["ends_at"] is None:
            remaining = cycle["duration_s"]
        else:
            remaining = max(0.0, cycle["ends_at"] - self.clock.monotonic())
        return {
            "command_id": cycle["command_id"],
            "task_id": cycle["task_id"],
            "step": cycle["step"],
            "remaining_s": round(remaining, 1),
        }
