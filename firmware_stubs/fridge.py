"""Holding equipment: fridges, freezers and hot-holding cabinets keep a set point.

They start holding their kind's default set point, publish readings every telemetry interval
(the agent's food-safety rules judge them), and answer ``set_point {setpoint_c}`` with ``done``
once the new target is in force. ``stop`` switches the element off (mode ``off``) until the
next ``set_point``. While holding, a temperature more than the kind's ``alarm_band_c`` from the
set point for ``alarm_delay_s`` (a failed compressor, a door left open) raises
``temperature_alarm`` (critical) once, and ``temperature_restored`` when it is back in band.

>>> from firmware_stubs.fakes import Element, ManualClock, RecordingTransport, Thermometer
>>> from firmware_stubs.kinds import spec_for
>>> fridge = HoldFirmware(spec_for("fridge"), "k1", "fridge-1", ManualClock(),
...                       Thermometer(3.5), Element(), RecordingTransport())
>>> fridge.boot(); fridge.mode, fridge.setpoint_c
('holding', 3.0)
"""

from firmware_stubs import wire
from firmware_stubs.core import Firmware

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware_stubs.hal import JsonObject


class HoldFirmware(Firmware):
    """Keep one set point; readings only, no cycles."""

    #: Tick counter value since which the temperature has been out of band (None: in band).
    out_of_band_since = None  # type: float | None
    alarm_raised = False

    def advance(self) -> None:
        temp, setpoint = self.temp_c, self.setpoint_c
        if temp is None or setpoint is None or self.mode != "holding":
            self.out_of_band_since = None
            return
        now = self.clock.monotonic()
        if abs(temp - setpoint) <= self.spec.alarm_band_c:
            self.out_of_band_since = None
            if self.alarm_raised:
                self.alarm_raised = False
                self.publish_event("temperature_restored", "info", "", {"temp_c": temp})
            return
        if self.out_of_band_since is None:
            self.out_of_band_since = now
        if not self.alarm_raised and now - self.out_of_band_since >= self.spec.alarm_delay_s:
            self.alarm_raised = True
            self.publish_event(
                "temperature_alarm",
                "critical",
                self.spec.metric + " " + str(round(temp, 1)) + " for set point " + str(setpoint),
                {"temp_c": round(temp, 1), "setpoint_c": setpoint},
            )

    def behaviour_handlers(self) -> "dict[str, Callable[[JsonObject], None]]":
        return {"set_point": self.do_set_point}

    def rest(self) -> None:
        self.set_point(self.spec.default_setpoint_c, "holding")

    def do_set_point(self, command: "JsonObject") -> None:
        params = command["params"]
        wire.reject_unknown_params(params, ("setpoint_c",))
        setpoint = wire.number_param(
            params, "setpoint_c", self.spec.min_setpoint_c, self.spec.max_setpoint_c
        )
        self.set_point(setpoint, "holding")
        self.send_ack(command["command_id"], "done", None, {"setpoint_c": setpoint})
