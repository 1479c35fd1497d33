"""The hardware a firmware talks to, as tiny interfaces (type-checking only on CPython).

A board support package provides real ones (an RTC and tick counter, a thermocouple amplifier,
a relay or SSR, an MQTT client); :mod:`firmware_stubs.fakes` provides fakes for tests and
:mod:`simulators.devices` provides simulated ones backed by :mod:`simulators.physics`.
Firmware modules import this only under ``TYPE_CHECKING``, so MicroPython never loads it.
"""

from typing import Any, Protocol

#: A decoded JSON object: messages, command parameters, ack data.
JsonObject = dict[str, Any]


class Clock(Protocol):
    """Two time bases, as on a microcontroller: a wall clock (RTC) and a tick counter."""

    def now(self) -> float:
        """Unix seconds (UTC), used for message timestamps and command expiry."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back; times set points and cycles."""
        ...


class TemperatureSensor(Protocol):
    """A temperature measurement: the cavity, oil, air or a core probe."""

    def read(self) -> float:
        """Degrees Celsius."""
        ...


class Actuator(Protocol):
    """A heater or cooler with a set point."""

    def set_target(self, setpoint_c: float | None) -> None:
        """Drive towards ``setpoint_c``; ``None`` switches the element off."""
        ...


class DoorSwitch(Protocol):
    """A reed switch on the door."""

    def is_open(self) -> bool: ...


class Transport(Protocol):
    """The MQTT link; the Last Will is configured by whoever owns the connection."""

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None: ...


class Uart(Protocol):
    """A serial port as a board has it: write bytes, read whatever is waiting (never blocks)."""

    def write(self, data: bytes) -> int | None: ...

    def read(self) -> bytes | None:
        """The bytes received since the last call: ``b""`` or ``None`` when there are none."""
        ...
