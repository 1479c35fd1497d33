"""The plain data the planning cores read and return: frozen dataclasses (and one tuple).

Inputs: :class:`World` (kitchens with stations, equipment, stock and reachability; SKUs;
committed bookings; learned prep times) and :class:`OrderRequest`. Outputs: :class:`BatchPlan`
(tasks, per-order plans, reservations, rejections). Times are epoch seconds; durations in
seconds unless the name says minutes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from control_plane.planning.prep_times import PrepTimeModel

PRIORITY_RANK: Mapping[str, int] = {"high": 0, "normal": 1, "low": 2}
# Equipment in these states gives no capacity (SPEC: failed/offline equipment removes capacity).
UNHEALTHY = frozenset({"failed", "offline"})


@dataclass(frozen=True)
class SkuSpec:
    """What the planner needs of a SKU.

    ``max_batch_units`` > 0 lets one task cook up to that many units for several orders;
    ``equipment_kinds`` must be healthy at the kitchen when its equipment is known;
    ``ingredients`` are ``(ingredient, amount per unit)``; ``max_hold_min`` is the holding limit
    from the kitchen's food-safety rule pack (``None``: only the freshness window applies).
    """

    sku_id: str
    station_id: str
    duration_s: float
    freshness_window_min: float
    priority: str = "normal"
    max_hold_min: float | None = None
    equipment_kinds: frozenset[str] = frozenset()
    max_batch_units: int = 0
    ingredients: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class OrderRequest:
    """An order to plan: ``(sku_id, quantity)`` lines, promise and transport time.

    ``transport_min_by_kitchen``, when given, is the transport from each kitchen that can reach
    the destination (others cannot); otherwise ``transport_min`` applies to every kitchen.
    ``not_before`` is the earliest a task may start (default: ``now``).
    """

    items: tuple[tuple[str, int], ...]
    promised_by: float
    transport_min: float
    order_id: str = ""
    priority: str = "normal"
    not_before: float | None = None
    transport_min_by_kitchen: Mapping[str, float] | None = None

    def transport_s(self, kitchen_id: str) -> float | None:
        """Transport seconds from ``kitchen_id``, ``None`` when it cannot reach the destination."""
        if self.transport_min_by_kitchen is None:
            return self.transport_min * 60.0
        minutes = self.transport_min_by_kitchen.get(kitchen_id)
        return None if minutes is None else minutes * 60.0


@dataclass(frozen=True)
class Rejection:
    """Why an order cannot be made in time; ``reason`` is a stable code."""

    reason: str
    detail: str


@dataclass(frozen=True)
class StationSpec:
    """A station and its parallel slots."""

    station_id: str
    slots: int


@dataclass(frozen=True)
class EquipmentUnit:
    """A piece of equipment, the station it serves and its health."""

    equipment_id: str
    kind: str
    station_id: str | None
    health: str  # ok | degraded | failed | offline


@dataclass(frozen=True)
class KitchenSpec:
    """A kitchen as the planner sees it.

    ``equipment`` ``None`` means unknown (a manual kitchen: slots are the capacity);
    ``stock`` ``None`` means stock is not tracked. ``last_sync_at`` and ``outbox_depth`` say
    what the control plane has heard from the kitchen's agent (for re-planning).
    """

    kitchen_id: str
    status: str  # active | paused | offline
    stations: tuple[StationSpec, ...]
    equipment: tuple[EquipmentUnit, ...] | None = None
    stock: Mapping[str, float] | None = None
    last_sync_at: float | None = None
    outbox_depth: int = 0

    def effective_slots(self, station_id: str) -> int:
        """Slots left once failed/offline equipment at the station is taken out.

        A station with equipment loses slots in proportion to its unhealthy units (two ovens
        serving four slots, one fails: two slots). A station without equipment keeps its slots.
        """
        station = next((s for s in self.stations if s.station_id == station_id), None)
        if station is None:
            return 0
        units = [e for e in self.equipment or () if e.station_id == station_id]
        if not units:
            return station.slots
        healthy = sum(e.health not in UNHEALTHY for e in units)
        return (station.slots * healthy) // len(units)

    def has_healthy(self, kinds: frozenset[str]) -> bool:
        """Whether every equipment kind is available (always, when equipment is unknown)."""
        if self.equipment is None or not kinds:
            return True
        healthy = {e.kind for e in self.equipment if e.health not in UNHEALTHY}
        return kinds <= healthy


class Booking(NamedTuple):
    """Committed work occupying one slot of a station over ``[start, end)``.

    A tuple, not a dataclass: intake builds one per slot level of every candidate station for
    every order."""

    kitchen_id: str
    station_id: str
    start: float
    end: float
    task_id: str = ""


class Occupancy(NamedTuple):
    """Committed work of one station as a step function: ``counts[i]`` slots are busy from
    ``times[i]`` until ``times[i + 1]``, none after the last time.

    The same as the bookings it sums, for a planner that only needs how many slots are busy
    when: intake reads it straight from the store's booked intervals, one sweep, where a busy
    station's bookings would be a tuple per slot level built for every order.

    >>> occupancy = Occupancy.of([(0.0, 10.0, 2), (5.0, 15.0, 1), (20.0, 20.0, 3)])
    >>> occupancy
    Occupancy(times=(0.0, 5.0, 10.0, 15.0), counts=(2, 3, 1, 0))
    >>> occupancy.busy_s()
    30.0
    """

    times: tuple[float, ...]
    counts: tuple[int, ...]

    @staticmethod
    def of(intervals: Iterable[tuple[float, float, int]]) -> Occupancy:
        """The step function of ``(start, end, count)`` intervals (empty ones ignored)."""
        deltas: dict[float, int] = {}
        for start, end, count in intervals:
            if end > start:
                deltas[start] = deltas.get(start, 0) + count
                deltas[end] = deltas.get(end, 0) - count
        times = tuple(sorted(deltas))
        return Occupancy(times, tuple(itertools.accumulate(deltas[at] for at in times)))

    def layers(self) -> list[tuple[float, float]]:
        """The fewest single-slot intervals with this concurrency over time: one per slot
        level, each as long as its level stays busy.

        >>> Occupancy.of([(0.0, 10.0, 2), (10.0, 20.0, 2), (5.0, 15.0, 1)]).layers()
        [(5.0, 15.0), (0.0, 20.0), (0.0, 20.0)]
        """
        out: list[tuple[float, float]] = []
        open_since: list[float] = []  # open_since[j]: when level j + 1 became busy
        for at, level in zip(self.times, self.counts, strict=True):
            while len(open_since) > level:
                out.append((open_since.pop(), at))
            while len(open_since) < level:
                open_since.append(at)
        return out

    def busy_s(self) -> float:
        """Slot-seconds of work (a slot busy for a second is one)."""
        return sum(
            count * (end - start)
            for start, end, count in zip(self.times, self.times[1:], self.counts, strict=False)
        )


@dataclass(frozen=True)
class World:
    """Everything a planning decision reads. A station's committed work is its ``bookings``
    (one per task, or per slot level) plus its ``occupancy``, if it has one."""

    kitchens: tuple[KitchenSpec, ...]
    skus: Mapping[str, SkuSpec]
    bookings: tuple[Booking, ...] = ()
    prep: PrepTimeModel = field(default_factory=PrepTimeModel)
    occupancy: Mapping[tuple[str, str], Occupancy] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderLine:
    """The part of a task that serves one line of one order."""

    order_id: str
    line: int
    quantity: int


@dataclass(frozen=True)
class TaskPlan:
    """A planned prep task: one SKU batch at one station slot for one or more order lines.

    The slot is reserved over ``[planned_start, planned_finish)`` (planned_finish uses the p90);
    ``predicted_ready_at`` uses the p50. ``finish_by`` is the latest ready time every order
    served allows, ``fresh_from`` the earliest ready time that keeps it fresh for all of them.
    """

    task_key: str
    kitchen_id: str
    station_id: str
    slot: int
    sku_id: str
    quantity: int
    lines: tuple[OrderLine, ...]
    planned_start: float
    predicted_ready_at: float
    planned_finish: float
    finish_by: float
    fresh_from: float


@dataclass(frozen=True)
class OrderPlan:
    """An accepted order: its kitchen, its tasks, when it will be ready, what to reserve."""

    order_id: str
    kitchen_id: str
    task_keys: tuple[str, ...]
    predicted_ready_at: float
    planned_finish: float
    reservations: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class BatchPlan:
    """The decisions of one planning call."""

    tasks: tuple[TaskPlan, ...]
    orders: tuple[OrderPlan, ...]
    rejections: tuple[tuple[str, Rejection], ...]
