"""Planning: choose kitchen, station slot and start time for orders, or say why not.

Pure: every function takes ``now`` and plain data and returns decisions; nothing else.

Two entry points:

- :func:`plan_batch` (the planner): plans many orders against a :class:`~.world.World` of
  kitchens (status, stations, equipment health, stock), committed bookings and learned prep
  times. Each line's food must be ready (p90) by ``promised_by - transport`` and, to stay fresh,
  not (p50) before ``promised_by - min(freshness window, transport + holding limit)``. Within that
  window a task starts as late as a free slot allows, so food waits as little as possible. Lines
  of the same SKU share a batch task (up to ``max_batch_units``) when both orders' windows allow.
  Kitchens are ranked by open batches they could join, then load per slot, then transport, then
  id; the first kitchen that can place every line just in time wins, else the one that comes
  closest among the first ``candidates`` that can. Orders are planned high priority first, then
  by promise, then by id, so the result depends only on the input.
- :func:`plan_order` (the thin slice that intake calls today): one order against kitchens with
  aggregate open work, every item as early as possible. Rules, in the order they are checked
  (fail fast, SPEC guarantee 2):

  1. every SKU must exist (``sku_unknown``);
  2. the transport must fit each SKU's freshness window (``freshness_infeasible``);
  3. an *active* kitchen must have every SKU's station (``sku_not_offered``);
  4. among those, the least loaded kitchen (open work per slot, ties by id) that can have the
     order ready by ``promised_by - transport`` gets it; if none can, ``deadline_infeasible``.

  Each order item becomes one prep task with ``start_after = now`` and
  ``finish_by = promised_by - transport``. A station with ``slots`` parallel slots and ``W``
  seconds of open work is modelled as every slot busy for ``W / slots`` seconds; tasks then go
  to the earliest free slot.

>>> kitchen = KitchenLoad("k1", "active", (StationLoad("grill", slots=1, open_work_s=0.0),))
>>> sku = SkuSpec("burger", station_id="grill", duration_s=300.0, freshness_window_min=30)
>>> plan = plan_order(0.0, OrderRequest((("burger", 1),), promised_by=3600.0, transport_min=10),
...                   [kitchen], {"burger": sku})
>>> plan.kitchen_id, plan.predicted_ready_at
('k1', 300.0)
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from control_plane.planning.scheduler import Placement, ReadyWindow, Scheduler
from control_plane.planning.world import (
    PRIORITY_RANK,
    BatchPlan,
    OrderLine,
    OrderPlan,
    OrderRequest,
    Rejection,
    SkuSpec,
    TaskPlan,
    World,
)

__all__ = [
    "BatchPlan",
    "KitchenLoad",
    "OrderPlan",
    "OrderRequest",
    "Plan",
    "PlannedTask",
    "PlannerSettings",
    "Rejection",
    "SkuSpec",
    "StationLoad",
    "TaskPlan",
    "plan_batch",
    "plan_order",
]


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


# --- the planner -------------------------------------------------------------------------------

# When no kitchen can take an order, the reason reported is that of the kitchen that got
# furthest through the checks (later in this list = further).
_REASON_DEPTH = (
    "unreachable",
    "kitchen_unavailable",
    "sku_not_offered",
    "equipment_unavailable",
    "freshness_infeasible",
    "stock_insufficient",
    "deadline_infeasible",
)


@dataclass(frozen=True)
class PlannerSettings:
    """Tuning of :func:`plan_batch`.

    ``guard_s``: extra margin before ``due`` beyond the p90. ``candidates``: how many feasible
    kitchens are compared when none is within ``good_enough_s`` of just in time; a line that
    joins a batch counts ``join_credit_s`` less holding (it saves a slot).
    ``asap``/``nearest_first``/``batching`` switch to the naive baseline (earliest start,
    nearest kitchen first, no batching).
    """

    guard_s: float = 0.0
    candidates: int = 4
    good_enough_s: float = 60.0
    join_credit_s: float = 600.0
    asap: bool = False
    nearest_first: bool = False
    batching: bool = True


@dataclass
class _Task:
    """A task being built (mutable while orders join it, frozen into a TaskPlan at the end)."""

    key: str
    sku: SkuSpec
    placement: Placement
    quantity: int
    finish_by: float
    fresh_from: float
    lines: list[OrderLine] = field(default_factory=list)


def _hold_s(sku: SkuSpec) -> tuple[float, float]:
    """(freshness window, holding limit) of a SKU in seconds."""
    return (
        sku.freshness_window_min * 60.0,
        math.inf if sku.max_hold_min is None else sku.max_hold_min * 60.0,
    )


class _OpenBatches:
    """Open batches of one kitchen x SKU, sorted by planned finish.

    Every batch of a bucket has the same p50/p90 (one estimate per kitchen x SKU and call), so
    "predicted ready >= fresh_from" is "planned finish >= fresh_from + (p90 - p50)": both
    freshness bounds are a range of planned finishes, found by bisection.
    """

    __slots__ = ("finishes", "tasks")

    def __init__(self) -> None:
        self.finishes: list[float] = []
        self.tasks: list[_Task] = []

    def add(self, task: _Task) -> None:
        at = bisect.bisect_right(self.finishes, task.placement.planned_finish)
        self.finishes.insert(at, task.placement.planned_finish)
        self.tasks.insert(at, task)

    def remove(self, task: _Task) -> None:
        at = bisect.bisect_left(self.finishes, task.placement.planned_finish)
        while self.tasks[at] is not task:
            at += 1
        del self.finishes[at]
        del self.tasks[at]

    def joinable(
        self, quantity: int, window: ReadyWindow, guard_s: float, joined: Mapping[str, int]
    ) -> _Task | None:
        """The batch this line can join with the least extra holding (latest finish), if any."""
        if not self.tasks:
            return None
        spread = self.tasks[0].placement.p90_s - self.tasks[0].placement.p50_s
        low = bisect.bisect_left(self.finishes, window.fresh_from + spread)
        at = bisect.bisect_right(self.finishes, window.due - guard_s) - 1
        # Only the latest few candidates: an older batch means more holding, and a bound here
        # keeps a busy bucket from costing a scan per order.
        stop = max(low, at - 3)
        while at >= stop:
            batch = self.tasks[at]
            if batch.placement.start < window.not_before:
                return None
            room = batch.sku.max_batch_units - batch.quantity - joined.get(batch.key, 0)
            if quantity <= room:
                return batch
            at -= 1
        return None


@dataclass
class _Attempt:
    kitchen_id: str
    shift_s: float
    placements: list[tuple[int, Placement]]
    joins: list[tuple[int, _Task]]
    windows: Sequence[ReadyWindow]


def plan_batch(
    now: float,
    orders: Sequence[OrderRequest],
    world: World,
    settings: PlannerSettings = PlannerSettings(),
) -> BatchPlan:
    """Plan ``orders`` at ``now`` against ``world``; deterministic for the same input.

    >>> from control_plane.planning.world import KitchenSpec, StationSpec
    >>> sku = SkuSpec("soup", station_id="stove", duration_s=600.0, freshness_window_min=30)
    >>> world = World((KitchenSpec("k1", "active", (StationSpec("stove", 1),)),), {"soup": sku})
    >>> order = OrderRequest((("soup", 2),), promised_by=7200.0, transport_min=10, order_id="o1")
    >>> task = plan_batch(0.0, [order], world).tasks[0]
    >>> task.kitchen_id, task.planned_start, task.planned_finish
    ('k1', 5850.0, 6600.0)
    """
    scheduler = Scheduler(now, world, guard_s=settings.guard_s, asap=settings.asap)
    open_batches: dict[tuple[str, str], _OpenBatches] = {}
    tasks: list[_Task] = []
    plans: list[OrderPlan] = []
    rejections: list[tuple[str, Rejection]] = []
    keyed = [(order.order_id or f"order-{n}", order) for n, order in enumerate(orders)]
    keyed.sort(key=lambda p: (PRIORITY_RANK.get(p[1].priority, 1), p[1].promised_by, p[0]))
    for order_id, order in keyed:
        decision = _plan_one(now, order_id, order, world, scheduler, open_batches, settings)
        if isinstance(decision, Rejection):
            rejections.append((order_id, decision))
            continue
        attempt, needs = decision
        order_tasks: list[_Task] = []
        for line, batch in attempt.joins:
            batch.quantity += order.items[line][1]
            if batch.quantity >= batch.sku.max_batch_units:
                open_batches[attempt.kitchen_id, batch.sku.sku_id].remove(batch)
            batch.lines.append(OrderLine(order_id, line, order.items[line][1]))
            window = attempt.windows[line]
            batch.finish_by = min(batch.finish_by, window.due)
            batch.fresh_from = max(batch.fresh_from, window.fresh_from)
            order_tasks.append(batch)
        for line, placement in attempt.placements:
            sku_id, quantity = order.items[line]
            sku = world.skus[sku_id]
            window = attempt.windows[line]
            task = _Task(
                f"{order_id}#{line}",
                sku,
                placement,
                quantity,
                window.due,
                window.fresh_from,
                [OrderLine(order_id, line, quantity)],
            )
            tasks.append(task)
            order_tasks.append(task)
            if settings.batching and quantity < sku.max_batch_units:
                open_batches.setdefault((attempt.kitchen_id, sku_id), _OpenBatches()).add(task)
        for ingredient, amount in sorted(needs.items()):
            scheduler.reserved[attempt.kitchen_id, ingredient] += amount
        plans.append(
            OrderPlan(
                order_id,
                attempt.kitchen_id,
                tuple(dict.fromkeys(t.key for t in order_tasks)),
                max(t.placement.predicted_ready_at for t in order_tasks),
                max(t.placement.planned_finish for t in order_tasks),
                tuple(sorted(needs.items())),
            )
        )
    return BatchPlan(_freeze(tasks, world), tuple(plans), tuple(rejections))


def _needs(order: OrderRequest, skus: Mapping[str, SkuSpec]) -> dict[str, float]:
    needs: dict[str, float] = {}
    for sku_id, quantity in order.items:
        for ingredient, per_unit in skus[sku_id].ingredients:
            needs[ingredient] = needs.get(ingredient, 0.0) + per_unit * quantity
    return needs


def _plan_one(
    now: float,
    order_id: str,
    order: OrderRequest,
    world: World,
    scheduler: Scheduler,
    open_batches: dict[tuple[str, str], _OpenBatches],
    settings: PlannerSettings,
) -> tuple[_Attempt, dict[str, float]] | Rejection:
    unknown = sorted({sku_id for sku_id, _ in order.items if sku_id not in world.skus})
    if unknown:
        return Rejection("sku_unknown", f"unknown SKU(s): {', '.join(unknown)}")
    skus = [world.skus[sku_id] for sku_id, _ in order.items]
    needs = _needs(order, world.skus)
    if order.transport_min_by_kitchen is None:
        reachable = list(scheduler.kitchens)
    else:
        reachable = sorted(k for k in order.transport_min_by_kitchen if k in scheduler.kitchens)
    reasons: dict[str, str] = {}
    candidates: list[tuple[tuple[float | str, ...], str]] = []
    transports: dict[str, float] = {}
    windows: dict[str, list[ReadyWindow]] = {}
    hints: dict[str, list[_Task | None]] = {}

    def windows_at(kitchen_id: str) -> list[ReadyWindow]:
        found = windows.get(kitchen_id)
        if found is None:
            transport_s = transports[kitchen_id]
            found = windows[kitchen_id] = [
                ReadyWindow(
                    order.promised_by - transport_s,
                    order.promised_by - min(fresh_s, transport_s + hold_s),
                    not_before,
                )
                for fresh_s, hold_s in hold
            ]
        return found

    not_before = now if order.not_before is None else order.not_before
    hold = [_hold_s(sku) for sku in skus]
    kitchens, can_make, makeable, by_kitchen = (
        scheduler.kitchens,
        scheduler.can_make,
        scheduler.makeable,
        order.transport_min_by_kitchen,
    )
    sku_ids = frozenset(sku.sku_id for sku in skus)
    shortest_window_s = min(sku.freshness_window_min for sku in skus) * 60.0
    for kitchen_id in reachable:
        kitchen = kitchens[kitchen_id]
        transport_s = (
            order.transport_min * 60.0 if by_kitchen is None else by_kitchen[kitchen_id] * 60.0
        )
        reason = None
        if not sku_ids <= makeable(kitchen_id):
            reason = next(r for sku in skus if (r := can_make(kitchen, sku)) is not None)
        elif transport_s > shortest_window_s:
            reason = "freshness_infeasible"
        if reason is None and needs and scheduler.stock_short(kitchen, needs):
            reason = "stock_insufficient"
        if reason is not None:
            reasons[kitchen_id] = reason
            continue
        transports[kitchen_id] = transport_s
        if settings.nearest_first:
            rank: tuple[float | str, ...] = (transport_s, kitchen_id)
        else:
            rank = (scheduler.load_per_slot(kitchen_id), transport_s, kitchen_id)
        candidates.append((rank, kitchen_id))
    candidates.sort()
    if settings.batching and not settings.nearest_first:
        # Among the best-ranked kitchens, those with a batch to join come first.
        head = candidates[: settings.candidates]
        joins = []
        for _, kitchen_id in head:
            # What each line could join, with nothing else joined yet: the attempt reuses it.
            found = [
                None
                if (batches := open_batches.get((kitchen_id, sku.sku_id))) is None
                else batches.joinable(
                    order.items[line][1], windows_at(kitchen_id)[line], settings.guard_s, {}
                )
                for line, sku in enumerate(skus)
            ]
            hints[kitchen_id] = found
            joins.append(any(batch is not None for batch in found))
        head = [c for c, j in zip(head, joins, strict=True) if j] + [
            c for c, j in zip(head, joins, strict=True) if not j
        ]
        candidates[: settings.candidates] = head
    best: _Attempt | None = None
    feasible = 0
    for _, kitchen_id in candidates:
        attempt = _attempt(
            order,
            kitchen_id,
            windows_at(kitchen_id),
            world,
            scheduler,
            open_batches,
            settings,
            hints.get(kitchen_id),
        )
        if attempt is None:
            reasons[kitchen_id] = "deadline_infeasible"
            continue
        feasible += 1
        if best is None or attempt.shift_s < best.shift_s:
            if best is not None:
                _release(scheduler, best)
            best = attempt
        else:
            _release(scheduler, attempt)
        if settings.asap or best.shift_s <= settings.good_enough_s:
            break
        if feasible >= settings.candidates:
            break
    if best is not None:
        return best, needs
    return _rejection(order_id, reasons)


def _release(scheduler: Scheduler, attempt: _Attempt) -> None:
    for _, placement in attempt.placements:
        scheduler.unbook(placement)


def _attempt(
    order: OrderRequest,
    kitchen_id: str,
    windows: Sequence[ReadyWindow],
    world: World,
    scheduler: Scheduler,
    open_batches: dict[tuple[str, str], _OpenBatches],
    settings: PlannerSettings,
    hints: Sequence[_Task | None] | None,
) -> _Attempt | None:
    """Place every line of ``order`` at ``kitchen_id`` (booked), or ``None`` (nothing booked)."""
    attempt = _Attempt(kitchen_id, 0.0, [], [], windows)
    joined: dict[str, int] = {}
    for line, (sku_id, quantity) in enumerate(order.items):
        sku = world.skus[sku_id]
        window = windows[line]
        hint = hints[line] if hints is not None else None
        if hints is not None and (hint is None or hint.key not in joined):
            # Joining other lines only takes room away: a hint made with nothing joined holds
            # unless this very batch was joined by an earlier line.
            batch = hint
        else:
            batch = _joinable(open_batches, kitchen_id, order, line, windows, settings, joined)
        if batch is not None:
            joined[batch.key] = joined.get(batch.key, 0) + quantity
            attempt.joins.append((line, batch))
            # Joining saves a slot; it is worth some extra holding (within freshness).
            attempt.shift_s += (
                window.due - settings.guard_s - batch.placement.planned_finish
            ) - settings.join_credit_s
            continue
        placement = scheduler.fit(kitchen_id, sku, window)
        if placement is None:
            _release(scheduler, attempt)
            return None
        scheduler.book(placement)
        attempt.placements.append((line, placement))
        attempt.shift_s += window.due - settings.guard_s - placement.planned_finish
    return attempt


def _joinable(
    open_batches: Mapping[tuple[str, str], _OpenBatches],
    kitchen_id: str,
    order: OrderRequest,
    line: int,
    windows: Sequence[ReadyWindow],
    settings: PlannerSettings,
    joined: Mapping[str, int],
) -> _Task | None:
    if not settings.batching:
        return None
    sku_id, quantity = order.items[line]
    batches = open_batches.get((kitchen_id, sku_id))
    if batches is None:
        return None
    return batches.joinable(quantity, windows[line], settings.guard_s, joined)


def _rejection(order_id: str, reasons: Mapping[str, str]) -> Rejection:
    if not reasons:
        return Rejection("unreachable", f"no kitchen can reach the destination of {order_id}")
    deepest = max(reasons.values(), key=_REASON_DEPTH.index)
    kitchens = sorted(k for k, r in reasons.items() if r == deepest)
    details = {
        "unreachable": "no kitchen can reach the destination",
        "kitchen_unavailable": "every kitchen that could make it is paused or offline",
        "sku_not_offered": "no active kitchen has the station(s) the SKUs need",
        "equipment_unavailable": "the equipment the SKUs need is failed or offline",
        "freshness_infeasible": "transport is longer than a SKU's freshness window",
        "stock_insufficient": "not enough ingredient stock left",
        "deadline_infeasible": "no free slot lets the order be ready by the promise",
    }
    return Rejection(deepest, f"{details[deepest]} (kitchens: {', '.join(kitchens[:5])})")


def _freeze(tasks: list[_Task], world: World) -> tuple[TaskPlan, ...]:
    """Frozen task plans, each with a slot index (interval colouring per station)."""
    # Only the stations that got a new task: a slot index depends on its own station alone.
    by_station: dict[tuple[str, str], list[tuple[float, float, int, str]]] = {}
    for n, task in enumerate(tasks):
        p = task.placement
        by_station.setdefault((p.kitchen_id, p.station_id), []).append(
            (p.start, p.planned_finish, 1, str(n))
        )
    for key, mine in by_station.items():
        # Committed work known only as a step function (intake's): one interval per level.
        occupancy = world.occupancy.get(key)
        if occupancy is not None:
            mine.extend((start, end, 0, "") for start, end in occupancy.layers())
    for booking in world.bookings:
        intervals = by_station.get((booking.kitchen_id, booking.station_id))
        if intervals is not None:
            intervals.append((booking.start, booking.end, 0, booking.task_id))
    slot_of: dict[int, int] = {}
    for intervals in by_station.values():
        free: list[int] = []
        running: list[tuple[float, int]] = []
        used = 0
        for start, end, is_new, ref in sorted(intervals):
            while running and running[0][0] <= start:
                heapq.heappush(free, heapq.heappop(running)[1])
            if free:
                slot = heapq.heappop(free)
            else:
                slot, used = used, used + 1
            heapq.heappush(running, (end, slot))
            if is_new:
                slot_of[int(ref)] = slot
    return tuple(
        TaskPlan(
            task_key=task.key,
            kitchen_id=task.placement.kitchen_id,
            station_id=task.placement.station_id,
            slot=slot_of[n],
            sku_id=task.sku.sku_id,
            quantity=task.quantity,
            lines=tuple(task.lines),
            planned_start=task.placement.start,
            predicted_ready_at=task.placement.predicted_ready_at,
            planned_finish=task.placement.planned_finish,
            finish_by=task.finish_by,
            fresh_from=task.fresh_from,
        )
        for n, task in enumerate(tasks)
    )
