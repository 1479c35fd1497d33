"""A station's slot timeline: how many tasks run at each instant, and where a new one fits.

The timeline is a step function of concurrency over time. Placing a task never lets the
concurrency exceed the station's slots anywhere in the task's interval, so "never more concurrent
tasks than slots" holds by construction. Work that is already committed and cannot move (a
leased or started task on a station that has since lost capacity) may exceed the slots; it then
simply blocks that stretch for new work.

It is the one mutable structure of the planner, private to a single planning call.

>>> timeline = SlotTimeline(slots=1)
>>> timeline.book(100.0, 200.0)
>>> timeline.latest_start(earliest=0.0, latest=150.0, duration=50.0)
50.0
>>> timeline.latest_start(earliest=60.0, latest=150.0, duration=50.0) is None
True
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence


class SlotTimeline:
    """Concurrency of one station over time (``times[i]`` starts a segment of ``counts[i]``)."""

    __slots__ = ("busy_s", "counts", "slots", "times")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.times: list[float] = []
        self.counts: list[int] = []
        self.busy_s = 0.0

    @classmethod
    def of(
        cls,
        slots: int,
        intervals: Iterable[tuple[float, float]],
        base: tuple[Sequence[float], Sequence[int]] | None = None,
    ) -> SlotTimeline:
        """A timeline with every interval booked: the same as :meth:`book` on each in turn,
        built in one sweep (a station with hundreds of booked intervals is rebuilt for every
        order at intake, and booking them one by one shifts the lists each time). ``base``:
        a step function (``times``, ``counts``) already booked under them.

        >>> SlotTimeline.of(2, [(0.0, 10.0), (5.0, 10.0), (10.0, 10.0)]).counts
        [1, 2, 0]
        >>> SlotTimeline.of(2, [(5.0, 10.0)], base=((0.0, 10.0), (1, 0))).counts
        [1, 2, 0]
        """
        timeline = cls(slots)
        deltas: dict[float, int] = {}
        busy_s = 0.0
        if base is not None and base[0]:
            times, counts = base
            before = 0
            for at, count, end in zip(times, counts, [*times[1:], times[-1]], strict=False):
                deltas[at] = count - before
                busy_s += count * (end - at)
                before = count
        for start, end in intervals:
            if end <= start:
                continue
            deltas[start] = deltas.get(start, 0) + 1
            deltas[end] = deltas.get(end, 0) - 1
            busy_s += end - start
        times = sorted(deltas)
        counts = list(itertools.accumulate(deltas[at] for at in times))
        timeline.times, timeline.counts, timeline.busy_s = times, counts, busy_s
        return timeline

    def _split(self, at: float) -> int:
        """Make ``at`` a segment boundary; return its index."""
        i = bisect.bisect_left(self.times, at)
        if i < len(self.times) and self.times[i] == at:
            return i
        before = self.counts[i - 1] if i > 0 else 0
        self.times.insert(i, at)
        self.counts.insert(i, before)
        return i

    def book(self, start: float, end: float) -> None:
        """Occupy one slot over ``[start, end)`` (even beyond capacity: committed work)."""
        if end <= start:
            return
        i = self._split(start)
        j = self._split(end)
        for k in range(i, j):
            self.counts[k] += 1
        self.busy_s += end - start

    def unbook(self, start: float, end: float) -> None:
        """Free what :meth:`book` occupied (a tentative placement that was not chosen)."""
        if end <= start:
            return
        i = bisect.bisect_left(self.times, start)
        j = bisect.bisect_left(self.times, end)
        for k in range(i, j):
            self.counts[k] -= 1
        self.busy_s -= end - start

    def peak(self, start: float, end: float) -> int:
        """The highest concurrency anywhere in ``[start, end)``."""
        i = bisect.bisect_right(self.times, start) - 1
        j = bisect.bisect_left(self.times, end)
        return max(self.counts[max(i, 0) : j], default=0) if j > 0 else 0

    def latest_start(self, *, earliest: float, latest: float, duration: float) -> float | None:
        """The latest ``s`` in ``[earliest, latest]`` with a slot free over ``[s, s+duration)``."""
        if self.slots <= 0:
            return None
        start = latest
        while start >= earliest:
            end = start + duration
            j = bisect.bisect_left(self.times, end) - 1
            # Walk back over the segments inside [start, end) looking for a full one.
            blocked_at: float | None = None
            while j >= 0 and (j + 1 >= len(self.times) or self.times[j + 1] > start):
                if self.counts[j] >= self.slots:
                    blocked_at = self.times[j]
                    break
                if self.times[j] <= start:
                    break
                j -= 1
            if blocked_at is None:
                return start
            # The latest start that ends by the full segment. ``blocked_at - duration`` may
            # round so that adding the duration back passes ``blocked_at``: the same full
            # segment would be found again and again, for ever.
            start = blocked_at - duration
            while start + duration > blocked_at:
                start = math.nextafter(start, -math.inf)
        return None

    def earliest_start(self, *, earliest: float, latest: float, duration: float) -> float | None:
        """The earliest ``s`` in ``[earliest, latest]`` with a free slot (the ASAP baseline)."""
        if self.slots <= 0:
            return None
        start = earliest
        while start <= latest:
            end = start + duration
            i = max(bisect.bisect_right(self.times, start) - 1, 0)
            blocked_until: float | None = None
            k = i
            while k < len(self.times) and self.times[k] < end:
                if self.counts[k] >= self.slots and (
                    k + 1 >= len(self.times) or self.times[k + 1] > start
                ):
                    if k + 1 >= len(self.times):
                        return None  # blocked for ever (not reachable: the last segment is empty)
                    blocked_until = self.times[k + 1]
                k += 1
            if blocked_until is None:
                return start
            start = blocked_until
        return None
