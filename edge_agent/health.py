"""Equipment health, pure: ``ok``, ``degraded`` or ``failed`` of an online device from what it
reports, with ``now`` passed in (``offline`` comes from its status, see :mod:`edge_agent.ingest`).

* ``failed``: the device's retained state says ``fault``: it is given no new work.
* ``degraded``: still usable (the planner keeps using it), but not as it should be:

  - it raised an alarm or a non-fatal fault (a ``warning`` or ``critical`` device event such as
    ``temperature_alarm``: the unit does not reach its set point, or ``sensor_fault``) that has
    not been restored (``temperature_restored``, ``sensor_restored`` or ``<event>_cleared``);
    an alarm nothing restores ends ``alarm_hold_s`` after it was last raised;
  - its telemetry is intermittent: in the last closed window of ``window_s`` the broker lost at
    least ``missed_ratio`` of the messages it numbered (and at least ``min_missed``).

The first matching rule wins, in that order. :meth:`HealthTracker.changes` returns only what
changed since it was last asked (and, once, the health of a device just heard or announced
online), so the store records (and syncs) transitions, not samples.

>>> tracker = HealthTracker()
>>> tracker.online("fridge-1", True)
>>> tracker.changes(now=0.0)
[HealthChange(device_id='fridge-1', health='ok', reason=None)]
>>> tracker.observe("fridge-1", at=0.0, event=("temperature_alarm", "critical"))
>>> tracker.changes(now=1.0)
[HealthChange(device_id='fridge-1', health='degraded', reason='temperature_alarm')]
>>> tracker.observe("fridge-1", at=2.0, event=("temperature_restored", "info"))
>>> tracker.changes(now=3.0)
[HealthChange(device_id='fridge-1', health='ok', reason=None)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Health = Literal["ok", "degraded", "failed"]

#: Events that end an alarm, and the alarm each ends (besides the ``<alarm>_cleared`` rule).
RESTORES: dict[str, str] = {
    "temperature_restored": "temperature_alarm",
    "sensor_restored": "sensor_fault",
}
#: Device events that are staff input or bookkeeping, never an alarm whatever their severity.
NOT_ALARMS = frozenset({"corrective_action", "probe_check", "step_confirmed", "door_open"})


@dataclass(frozen=True, slots=True)
class HealthChange:
    device_id: str
    health: Health
    reason: str | None


@dataclass(slots=True)
class _Device:
    online: bool = False
    mode: str | None = None
    alarms: dict[str, float] = field(default_factory=dict)  # alarm -> last raised at
    window_start: float | None = None
    received: int = 0
    missed: int = 0
    intermittent: bool = False
    reported: Health | None = None


class HealthTracker:
    """Health of each device the agent hears; not thread-safe (the ingest thread owns it)."""

    def __init__(
        self,
        *,
        window_s: float = 300.0,
        missed_ratio: float = 0.1,
        min_missed: int = 3,
        alarm_hold_s: float = 900.0,
    ) -> None:
        self.window_s = window_s
        self.missed_ratio = missed_ratio
        self.min_missed = min_missed
        self.alarm_hold_s = alarm_hold_s
        self._devices: dict[str, _Device] = {}

    def online(self, device_id: str, online: bool) -> None:
        """Birth/Last Will: an offline device's health is ``offline`` (its status says so); for
        one (re)announced online the next :meth:`changes` reports its derived health again
        (the store keeps it only if it differs from what it has)."""
        device = self._devices.setdefault(device_id, _Device())
        device.online = online
        device.reported = None
        if not online:
            device.window_start, device.received, device.missed = None, 0, 0
            device.intermittent = False

    def observe(
        self,
        device_id: str,
        *,
        at: float,
        received: int = 1,
        missed: int = 0,
        mode: str | None = None,
        event: tuple[str, str] | None = None,
    ) -> None:
        """``received`` messages of the device up to ``at`` (``missed``: the seq gaps before
        them; the ingest loop sums a flush's worth per device), its retained state's ``mode``,
        or a device ``event`` as ``(name, severity)``."""
        device = self._devices.setdefault(device_id, _Device(online=True))
        self._roll_window(device, at)
        device.received += received
        device.missed += missed
        if mode is not None:
            device.mode = mode
        if event is not None:
            name, severity = event
            restored = RESTORES.get(name) or (
                name[: -len("_cleared")] if name.endswith("_cleared") else None
            )
            if restored is not None:
                device.alarms.pop(restored, None)
            elif severity in ("warning", "critical") and name not in NOT_ALARMS:
                device.alarms[name] = at

    def changes(self, *, now: float) -> list[HealthChange]:
        """Devices whose derived health differs from what was last reported, now reported."""
        changed: list[HealthChange] = []
        for device_id, device in sorted(self._devices.items()):
            if not device.online:
                continue
            self._roll_window(device, now)
            health, reason = self._derive(device, now)
            if health != device.reported:
                device.reported = health
                changed.append(HealthChange(device_id, health, reason))
        return changed

    def _derive(self, device: _Device, now: float) -> tuple[Health, str | None]:
        if device.mode == "fault":
            return "failed", "fault"
        for alarm, raised_at in list(device.alarms.items()):
            if now - raised_at >= self.alarm_hold_s:
                del device.alarms[alarm]
        if device.alarms:
            return "degraded", max(device.alarms, key=lambda a: device.alarms[a])
        if device.intermittent:
            return "degraded", "telemetry_intermittent"
        return "ok", None

    def _roll_window(self, device: _Device, at: float) -> None:
        if device.window_start is None:
            device.window_start = at
            return
        if at - device.window_start < self.window_s:
            return
        numbered = device.received + device.missed
        device.intermittent = (
            device.missed >= self.min_missed and device.missed >= self.missed_ratio * numbered
        )
        # Windows with no message at all are the silence rules' business, not this one's.
        device.window_start, device.received, device.missed = at, 0, 0
