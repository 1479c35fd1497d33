"""Routine telemetry, pure: device ``seq`` gap detection and windowed summaries.

Nothing here does I/O or reads a clock; the ingest loop (:mod:`edge_agent.ingest`) feeds it
readings with their times and writes what it returns.

>>> seqs = SeqTracker()
>>> seqs.observe("fridge-1", 1), seqs.observe("fridge-1", 2), seqs.observe("fridge-1", 5)
(0, 0, 2)
>>> windows = WindowAggregator(window_s=60.0)
>>> windows.add(ReadingIn("fridge-1", "air_temp", "C", 3.0, at=0.0))
>>> windows.add(ReadingIn("fridge-1", "air_temp", "C", 5.0, at=30.0))
>>> [(s.count, s.mean) for s in windows.close(now=61.0)]
[(2, 4.0)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

#: A device ``seq`` this far below the last one is a device restart (counter reset), not a
#: reordering of old messages.
RESTART_DROP = 1000


class ReadingIn(NamedTuple):
    """One reading as a link received it; ``at`` is the device time when trusted, else agent.

    A named tuple rather than a frozen dataclass (immutable all the same): links build one per
    reading at telemetry rates, in paho's network thread, and a tuple costs half as much.
    """

    device_id: str
    metric: str
    unit: str
    value: float
    at: float
    link: str = "mqtt"


class Observed(NamedTuple):
    """A numbered device message (telemetry, state or event) and the readings it carried.

    A named tuple for the same reason as :class:`ReadingIn`: one per message.
    """

    device_id: str
    link: str
    seq: int | None
    at: float
    readings: tuple[ReadingIn, ...] = ()
    #: The device's mode from a retained ``state`` (equipment health: ``fault`` is failed).
    mode: str | None = None
    #: A device ``event`` as ``(name, severity)`` (equipment health: alarms degrade it).
    event: tuple[str, str] | None = None


class RawTelemetry(NamedTuple):
    """A telemetry message as the MQTT link received it, not yet decoded.

    Telemetry is nearly all of the device plane's traffic. The link stamps it and queues the
    bytes; the ingest thread decodes a whole flush of them in one go with ``decode`` (the
    link's own decoder: same checks, same counted drops), which keeps paho's network thread
    (the one that acknowledges to the broker) short and costs less CPU than decoding one
    message at a time between socket reads.
    """

    device_id: str
    at: float
    payload: bytes
    #: Turns this message into what it observed, or ``None`` when it is dropped (and counted).
    decode: Callable[[RawTelemetry], Observed | None]


@dataclass(frozen=True, slots=True)
class StatusSeen:
    """A device's birth or status (online/offline) as a link saw it."""

    device_id: str
    link: str
    at: float
    online: bool | None = None
    kind: str | None = None
    model: str | None = None
    firmware: str | None = None


@dataclass(frozen=True, slots=True)
class CorrectiveAction:
    """Staff recorded what they did about an alert (``corrective_action`` device event)."""

    alert_id: str
    action: str
    badge: str | None
    at: float
    device_id: str = ""


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """Staff checked a probe against a reference (``probe_check`` device event), e.g. the
    ice-point check: the probe in iced water should read 0 °C."""

    device_id: str
    probe: str
    reading_c: float
    reference_c: float
    badge: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Summary:
    """A window of one device's metric: what ``readings.summary`` carries."""

    device_id: str
    metric: str
    unit: str
    window_start: float
    window_end: float
    count: int
    min: float
    max: float
    mean: float
    last: float
    missed: int = 0

    def payload(self) -> dict[str, float | int | str]:
        return {
            "device_id": self.device_id,
            "metric": self.metric,
            "unit": self.unit,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": round(self.mean, 4),
            "last": self.last,
            "missed": self.missed,
        }


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary covering several of the same device and metric, oldest first.

    >>> merge_summaries([
    ...     {"device_id": "f", "metric": "t", "unit": "C", "window_start": 0, "window_end": 60,
    ...      "count": 1, "min": 2.0, "max": 2.0, "mean": 2.0, "last": 2.0, "missed": 0},
    ...     {"device_id": "f", "metric": "t", "unit": "C", "window_start": 60, "window_end": 120,
    ...      "count": 3, "min": 3.0, "max": 7.0, "mean": 4.0, "last": 7.0, "missed": 1},
    ... ])["mean"]
    3.5
    """
    first, last = summaries[0], summaries[-1]
    count = sum(int(s["count"]) for s in summaries)
    return {
        **first,
        "window_start": min(float(s["window_start"]) for s in summaries),
        "window_end": max(float(s["window_end"]) for s in summaries),
        "count": count,
        "min": min(float(s["min"]) for s in summaries),
        "max": max(float(s["max"]) for s in summaries),
        "mean": round(sum(float(s["mean"]) * int(s["count"]) for s in summaries) / count, 4),
        "last": last["last"],
        "missed": sum(int(s.get("missed", 0)) for s in summaries),
    }


class SeqTracker:
    """Per-device ``seq`` high-water marks; :meth:`observe` returns how many were missed.

    A repeat or an older seq (QoS 1 redelivery, retained state) counts nothing; a big drop is a
    device restart and resets the mark; a jump forward counts the numbers skipped.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self.missed_total = 0

    def observe(self, device_id: str, seq: int) -> int:
        last = self._last.get(device_id)
        if last is None or seq > last or last - seq > RESTART_DROP or seq == 0:
            self._last[device_id] = seq
        if last is None or seq <= last + 1:
            return 0
        missed = seq - last - 1
        self.missed_total += missed
        return missed

    def last(self, device_id: str) -> int | None:
        return self._last.get(device_id)


@dataclass
class _Window:
    start: float
    end: float
    count: int
    low: float
    high: float
    total: float
    last: float
    unit: str


class WindowAggregator:
    """Summaries per ``(device, metric)`` over windows of ``window_s`` (by reading time)."""

    def __init__(self, *, window_s: float) -> None:
        self.window_s = window_s
        self._open: dict[tuple[str, str], _Window] = {}
        self._missed: dict[str, int] = {}

    def add(self, reading: ReadingIn) -> None:
        key = (reading.device_id, reading.metric)
        window = self._open.get(key)
        if window is None:
            self._open[key] = _Window(
                reading.at,
                reading.at,
                1,
                reading.value,
                reading.value,
                reading.value,
                reading.value,
                reading.unit,
            )
            return
        window.count += 1
        window.low = min(window.low, reading.value)
        window.high = max(window.high, reading.value)
        window.total += reading.value
        window.last = reading.value
        window.start = min(window.start, reading.at)
        window.end = max(window.end, reading.at)

    def add_missed(self, device_id: str, missed: int) -> None:
        """Messages of ``device_id`` lost (seq gaps); reported with its next summaries."""
        if missed:
            self._missed[device_id] = self._missed.get(device_id, 0) + missed

    def close(self, *, now: float, force: bool = False) -> list[Summary]:
        """Summaries of windows opened at least ``window_s`` before ``now`` (all if ``force``)."""
        done = [k for k, w in self._open.items() if force or now - w.start >= self.window_s]
        summaries = []
        for key in sorted(done):
            window = self._open.pop(key)
            summaries.append(
                Summary(
                    device_id=key[0],
                    metric=key[1],
                    unit=window.unit,
                    window_start=window.start,
                    window_end=window.end,
                    count=window.count,
                    min=window.low,
                    max=window.high,
                    mean=window.total / window.count,
                    last=window.last,
                    missed=self._missed.pop(key[0], 0),
                )
            )
        return summaries

    def pending(self) -> int:
        return len(self._open)
