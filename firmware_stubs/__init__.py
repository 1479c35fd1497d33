"""Device-side logic that could run on a microcontroller (MicroPython-compatible subset).

No pydantic, no :mod:`protocol`, no threads, no sleeping: plain classes and dicts over tiny
hardware interfaces (:mod:`firmware_stubs.hal`). The kind table (:mod:`firmware_stubs.kinds`)
picks the behaviour: cycles (:mod:`firmware_stubs.oven`) or holding
(:mod:`firmware_stubs.fridge`). A board's main loop is::

    firmware = build_firmware("oven", "k1", "oven-1", clock, sensor, heater, mqtt)
    firmware.boot()
    firmware.announce()          # and again after every reconnect
    while True:
        for payload in mqtt.pending_commands():
            firmware.on_command(payload)
        firmware.tick()

>>> from firmware_stubs.fakes import Element, ManualClock, RecordingTransport, Thermometer
>>> fryer = build_firmware("fryer", "k1", "fryer-1", ManualClock(), Thermometer(),
...                        Element(), RecordingTransport())
>>> fryer.spec.actions
('cook', 'stop', 'configure')
"""

from firmware_stubs.core import FIRMWARE_VERSION, Firmware, RecentCommands
from firmware_stubs.fridge import HoldFirmware
from firmware_stubs.kinds import CYCLE, HOLD, KINDS, KindSpec, spec_for
from firmware_stubs.oven import CycleFirmware

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BEHAVIOURS = {CYCLE: CycleFirmware, HOLD: HoldFirmware}


def build_firmware(
    kind: str, kitchen_id: str, device_id: str, *args: "Any", **kwargs: "Any"
) -> Firmware:
    """The firmware for ``kind``, with the arguments of :class:`~firmware_stubs.core.Firmware`
    after ``spec`` (clock, sensor, actuator, transport, then keywords)."""
    spec = spec_for(kind)
    return BEHAVIOURS[spec.behaviour](spec, kitchen_id, device_id, *args, **kwargs)


__all__ = [
    "BEHAVIOURS",
    "CYCLE",
    "FIRMWARE_VERSION",
    "HOLD",
    "KINDS",
    "CycleFirmware",
    "Firmware",
    "HoldFirmware",
    "KindSpec",
    "RecentCommands",
    "build_firmware",
    "spec_for",
]
