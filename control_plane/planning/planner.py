"""The thin-slice planner: choose a kitchen for an order and lay out its prep tasks.

Pure: it takes ``now`` and plain data (kitchens with their stations' open work, the SKU
catalogue, the order) and returns a :class:`Plan` or a :class:`Rejection`; nothing else.

Rules, in the order they are checked (fail fast, SPEC guarantee 2):

1. every SKU must exist (``sku_unknown``);
2. the transport must fit each SKU's freshness window (``freshness_infeasible``);
3. an *active* kitchen must have every SKU's station (``sku_not_offered``);
4. among those, the least loaded kitchen (open work per slot, ties by id) that can have the
   order ready by ``promised_by - transport`` gets it; if none can, ``deadline_infeasible``.

Each order item becomes one prep task with ``start_after = now`` and
``finish_by = promised_by - transport``. A station with ``slots`` parallel slots and ``W`` seconds
of open work is modelled as every slot busy for ``W / slots`` seconds; tasks then go to the
earliest free slot.

>>> kitchen = KitchenLoad("k1", "active", (StationLoad("grill", slots=1, open_work_s=0.0),))
>>> sku = SkuSpec("burger", station_id="grill", duration_s=300.0, freshness_window_min=30)
>>> plan = plan_order(0.0, OrderRequest((("burger", 1),), promised_by=3600.0, transport_min=10),
...                   [kitchen], {"burger": sku})
>>> plan.kitchen_id, plan.predicted_ready_at
('k1', 300.0)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StationLoad:
    """One station of a kitchen and the seconds of work still open on it."""

    station_id: str
    slots: int
    open_work_s: float


@dataclass(frozen=True)
class KitchenLoad:
    """A kitchen as the planner sees it."""

    kitchen_id: str
    status: str
    stations: tuple[StationLoad, ...]

    @property
    def load_per_slot_s(self) -> float:
        slots = sum(station.slots for station in self.stations)
        return sum(station.open_work_s for station in self.stations) / max(slots, 1)


@dataclass(frozen=True)
class SkuSpec:
    """What the planner needs of a SKU: its station, batch duration and freshness window."""

    sku_id: str
    station_id: str
    duration_s: float
    freshness_window_min: float


@dataclass(frozen=True)
class OrderRequest:
    """An order to plan: ``(sku_id, quantity)`` lines, promise and transport time."""

    items: tuple[tuple[str, int], ...]
    promised_by: float
    transport_min: float


@dataclass(frozen=True)
class PlannedTask:
    """One prep task of a plan (one per order line)."""

    line: int
    sku_id: str
    quantity: int
    station_id: str
    duration_s: float
    start_after: float
    finish_by: float
    predicted_start_at: float
    predicted_ready_at: float


@dataclass(frozen=True)
class Plan:
    """An accepted order's kitchen, tasks and predicted ready time."""

    kitchen_id: str
    tasks: tuple[PlannedTask, ...]
    predicted_ready_at: float


@dataclass(frozen=True)
class Rejection:
    """Why an order cannot be made in time; ``reason`` is a stable code."""

    reason: str
    detail: str


def plan_order(
    now: float,
    order: OrderRequest,
    kitchens: Iterable[KitchenLoad],
    skus: Mapping[str, SkuSpec],
) -> Plan | Rejection:
    """Plan ``order`` at time ``now`` or say why it cannot be made in time."""
    unknown = sorted({sku_id for sku_id, _ in order.items if sku_id not in skus})
    if unknown:
        return Rejection("sku_unknown", f"unknown SKU(s): {', '.join(unknown)}")
    for sku_id, _ in order.items:
        window = skus[sku_id].freshness_window_min
        if order.transport_min > window:
            return Rejection(
                "freshness_infeasible",
                f"transport of {order.transport_min:g} min exceeds the {window:g} min freshness"
                f" window of {sku_id}",
            )
    needed = {skus[sku_id].station_id for sku_id, _ in order.items}
    candidates = sorted(
        (
            kitchen
            for kitchen in kitchens
            if kitchen.status == "active"
            and needed <= {station.station_id for station in kitchen.stations}
        ),
        key=lambda kitchen: (kitchen.load_per_slot_s, kitchen.kitchen_id),
    )
    if not candidates:
        return Rejection(
            "sku_not_offered",
            f"no active kitchen has the station(s) {', '.join(sorted(needed))}",
        )
    deadline = order.promised_by - order.transport_min * 60.0
    best_ready: float | None = None
    for kitchen in candidates:
        tasks = _lay_out(now, order, kitchen, skus, deadline)
        ready = max(task.predicted_ready_at for task in tasks)
        if ready <= deadline:
            return Plan(kitchen.kitchen_id, tasks, ready)
        best_ready = ready if best_ready is None else min(best_ready, ready)
    assert best_ready is not None
    return Rejection(
        "deadline_infeasible",
        f"the earliest kitchen would be ready {best_ready - deadline:.0f} s after the latest"
        " ready time the promise and transport allow",
    )


def _lay_out(
    now: float,
    order: OrderRequest,
    kitchen: KitchenLoad,
    skus: Mapping[str, SkuSpec],
    deadline: float,
) -> tuple[PlannedTask, ...]:
    slots_free_at: dict[str, list[float]] = {}
    for station in kitchen.stations:
        busy_until = now + station.open_work_s / station.slots
        slots_free_at[station.station_id] = [busy_until] * station.slots
    tasks = []
    for line, (sku_id, quantity) in enumerate(order.items):
        sku = skus[sku_id]
        heap = slots_free_at[sku.station_id]
        start = max(now, heapq.heappop(heap))
        ready = start + sku.duration_s
        heapq.heappush(heap, ready)
        tasks.append(
            PlannedTask(
                line=line,
                sku_id=sku_id,
                quantity=quantity,
                station_id=sku.station_id,
                duration_s=sku.duration_s,
                start_after=now,
                finish_by=deadline,
                predicted_start_at=start,
                predicted_ready_at=ready,
            )
        )
    return tuple(tasks)
