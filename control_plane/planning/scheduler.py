"""Where one prep task fits at one kitchen: the placement step shared by planning and re-planning.

A task of SKU ``s`` at kitchen ``k`` reserves a slot of ``s``'s station for its p90 duration.
Its *ready window* is ``[fresh_from, due]``: it must be ready (planned finish, p90) by ``due`` —
the latest time it can leave and still arrive by the promise — and not ready (predicted, p50)
before ``fresh_from``, or it would wait past its freshness window or holding limit. Within that
window it starts as late as a free slot allows (just in time, short holding), or as early as
possible in ``asap`` mode (the thin-slice and baseline behaviour).

Private to one planning call: :class:`Scheduler` owns the mutable slot timelines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

from control_plane.planning.prep_times import PrepEstimate
from control_plane.planning.timeline import SlotTimeline
from control_plane.planning.world import KitchenSpec, SkuSpec, World


class ReadyWindow(NamedTuple):
    """When one order line's food may be ready at one kitchen (a tuple: made in hot loops)."""

    due: float
    fresh_from: float
    not_before: float


class Placement(NamedTuple):
    """A slot interval chosen for one task: reserved ``[start, planned_finish)`` (p90), ready
    around ``predicted_ready_at`` (p50). A tuple: made in hot loops."""

    kitchen_id: str
    station_id: str
    start: float
    p50_s: float
    p90_s: float
    predicted_ready_at: float
    planned_finish: float

    @classmethod
    def at(
        cls, kitchen_id: str, station_id: str, start: float, p50_s: float, p90_s: float
    ) -> Placement:
        return cls(kitchen_id, station_id, start, p50_s, p90_s, start + p50_s, start + p90_s)


def ready_window(
    *,
    promised_by: float,
    transport_s: float,
    sku: SkuSpec,
    not_before: float,
) -> ReadyWindow:
    """The ready window of a line: due by departure, fresh at handover, held no longer than the
    holding limit before it leaves."""
    hold_s = math.inf if sku.max_hold_min is None else sku.max_hold_min * 60.0
    freshness_s = min(sku.freshness_window_min * 60.0, transport_s + hold_s)
    due = promised_by - transport_s
    return ReadyWindow(due=due, fresh_from=promised_by - freshness_s, not_before=not_before)


class Scheduler:
    """Slot timelines of every kitchen station, prep estimates and stock reservations."""

    def __init__(self, now: float, world: World, *, guard_s: float, asap: bool) -> None:
        self.now = now
        self.world = world
        self.guard_s = guard_s
        self.asap = asap
        self.kitchens: dict[str, KitchenSpec] = {
            k.kitchen_id: k for k in sorted(world.kitchens, key=lambda k: k.kitchen_id)
        }
        self._timelines: dict[tuple[str, str], SlotTimeline] = {}
        self._bookings: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        self._busy: dict[str, float] = defaultdict(float)
        for booking in world.bookings:
            self._bookings[booking.kitchen_id, booking.station_id].append(
                (booking.start, booking.end)
            )
            self._busy[booking.kitchen_id] += max(0.0, booking.end - booking.start)
        for (kitchen_id, _), occupancy in world.occupancy.items():
            self._busy[kitchen_id] += occupancy.busy_s()
        self._estimates: dict[tuple[str, str], PrepEstimate] = {}
        self._capacity: dict[str, int] = {}
        self._can_make: dict[tuple[str, str], str | None] = {}
        self._makeable: dict[str, frozenset[str]] = {}
        self.reserved: dict[tuple[str, str], float] = defaultdict(float)

    def estimate(self, kitchen_id: str, sku: SkuSpec) -> PrepEstimate:
        key = (kitchen_id, sku.sku_id)
        found = self._estimates.get(key)
        if found is None:
            found = self.world.prep.estimate(kitchen_id, sku.sku_id, nominal_s=sku.duration_s)
            self._estimates[key] = found
        return found

    def timeline(self, kitchen_id: str, station_id: str) -> SlotTimeline:
        key = (kitchen_id, station_id)
        found = self._timelines.get(key)
        if found is None:
            found = SlotTimeline.of(
                self.kitchens[kitchen_id].effective_slots(station_id),
                self._bookings.get(key, ()),
                self.world.occupancy.get(key),
            )
            self._timelines[key] = found
        return found

    def load_per_slot(self, kitchen_id: str) -> float:
        """Seconds of booked work per effective slot (the load-balancing key)."""
        slots = self._capacity.get(kitchen_id)
        if slots is None:
            kitchen = self.kitchens[kitchen_id]
            slots = sum(kitchen.effective_slots(s.station_id) for s in kitchen.stations)
            self._capacity[kitchen_id] = slots
        return self._busy[kitchen_id] / max(slots, 1)

    def can_make(self, kitchen: KitchenSpec, sku: SkuSpec) -> str | None:
        """Why ``kitchen`` cannot make ``sku`` at all now, or ``None``."""
        key = (kitchen.kitchen_id, sku.sku_id)
        if key not in self._can_make:
            self._can_make[key] = self._why_not(kitchen, sku)
        return self._can_make[key]

    def makeable(self, kitchen_id: str) -> frozenset[str]:
        """Every SKU the kitchen can make at all now."""
        found = self._makeable.get(kitchen_id)
        if found is None:
            kitchen = self.kitchens[kitchen_id]
            found = frozenset(
                sku_id
                for sku_id, sku in self.world.skus.items()
                if self.can_make(kitchen, sku) is None
            )
            self._makeable[kitchen_id] = found
        return found

    @staticmethod
    def _why_not(kitchen: KitchenSpec, sku: SkuSpec) -> str | None:
        if kitchen.status != "active":
            return "kitchen_unavailable"
        if not any(s.station_id == sku.station_id for s in kitchen.stations):
            return "sku_not_offered"
        if kitchen.effective_slots(sku.station_id) <= 0 or not kitchen.has_healthy(
            sku.equipment_kinds
        ):
            return "equipment_unavailable"
        return None

    def stock_short(self, kitchen: KitchenSpec, needs: dict[str, float]) -> list[str]:
        """Ingredients the kitchen lacks for ``needs`` after what is already reserved."""
        if kitchen.stock is None:
            return []
        return sorted(
            ingredient
            for ingredient, amount in needs.items()
            if kitchen.stock.get(ingredient, 0.0) - self.reserved[kitchen.kitchen_id, ingredient]
            < amount - 1e-9
        )

    def fit(self, kitchen_id: str, sku: SkuSpec, window: ReadyWindow) -> Placement | None:
        """The best slot interval for one task within its ready window, without booking it."""
        estimate = self.estimate(kitchen_id, sku)
        # The fresh side of the window with a fast cook, not a median one: food that comes out
        # early waits, and waiting past the holding limit wastes it. The p10 is taken as far
        # below the p50 as the p90 is above it (prep times are skewed right, so this errs safe).
        fast_s = max(estimate.p50_s - (estimate.p90_s - estimate.p50_s), 0.5 * estimate.p50_s)
        earliest = max(self.now, window.not_before, window.fresh_from - fast_s)
        latest = window.due - self.guard_s - estimate.p90_s
        if latest < earliest:
            return None
        timeline = self.timeline(kitchen_id, sku.station_id)
        pick = timeline.earliest_start if self.asap else timeline.latest_start
        start = pick(earliest=earliest, latest=latest, duration=estimate.p90_s)
        if start is None:
            return None
        return Placement.at(kitchen_id, sku.station_id, start, estimate.p50_s, estimate.p90_s)

    def book(self, placement: Placement) -> None:
        self.timeline(placement.kitchen_id, placement.station_id).book(
            placement.start, placement.planned_finish
        )
        self._busy[placement.kitchen_id] += placement.p90_s

    def unbook(self, placement: Placement) -> None:
        self.timeline(placement.kitchen_id, placement.station_id).unbook(
            placement.start, placement.planned_finish
        )
        self._busy[placement.kitchen_id] -= placement.p90_s
