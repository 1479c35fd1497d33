"""Rush comparison: the same seeded day run twice in simulated time, Brigade vs a naive baseline.

A deterministic discrete-event simulation (a seeded :class:`random.Random`, an event heap, no
wall clock, no processes) of a lunch service across several kitchens. Both policies see the same
orders (:mod:`simulators.demand`), the same kitchens, the same prep-time draws per order and the
same faults (an oven failing, a kitchen losing power mid-rush).

- **brigade** drives the real planning cores of :mod:`control_plane.planning`: each simulated
  minute the control loop re-plans (:func:`~control_plane.planning.replan.replan`), plans the
  orders admitted since the last tick in one :func:`~control_plane.planning.planner.plan_batch`
  call, leases tasks due within the lease horizon, predicts and alerts
  (:mod:`~control_plane.planning.sla`) and steps backpressure; intake consults
  :func:`~control_plane.planning.backpressure.admit_order` as each order arrives; every
  completion is learned (:func:`~control_plane.planning.prep_times.observe`). A kitchen starts a
  leased task at its planned start when a slot is free and never after its start-by deadline.
- **baseline**: every order goes to the nearest active kitchen with the SKU's station and is
  cooked "to the ticket": started once ``promised_by - transport - recipe duration`` has come
  (or at once if it has passed) as soon as a slot frees, first come first served; no
  throttling, no prediction, no learning, no re-planning. It is the schedule a competent kitchen
  keeps by hand, not a strawman that cooks everything at once and lets it go stale.
- **baseline_asap** (reported beside them): the same dispatcher cooking every order as soon as
  a slot frees, the other naive policy; its food waits and goes stale.

Food ready before ``promised_by - transport`` waits (hold time); food older than its freshness
window at handover, or held longer than its holding limit, is wasted. An accepted order is late
when its food arrives after the promise, is wasted, or is never made.

This is the one simulator module that imports :mod:`control_plane` (only its pure planning
cores): the comparison is worth something only if it runs the real decisions.

>>> day = RushDay(start_h=11.5, end_h=12.0)
>>> report = compare(day, seed=1)
>>> sorted(report) == ["baseline", "baseline_asap", "brigade", "params", "seed"]
True
>>> report["brigade"]["orders_submitted"] == report["baseline"]["orders_submitted"]
True
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from control_plane.planning import backpressure, prep_times, replan, sla
from control_plane.planning.planner import PlannerSettings, plan_batch
from control_plane.planning.world import (
    Booking,
    EquipmentUnit,
    KitchenSpec,
    OrderRequest,
    SkuSpec,
    StationSpec,
    World,
)
from simulators.demand import DemandProfile, Rush, SkuShare, Spike, generate

Policy = Literal["brigade", "baseline", "baseline_asap"]
POLICIES: tuple[Policy, ...] = ("brigade", "baseline", "baseline_asap")

#: The menu in kitchen-day seconds (nominal = the recipe's duration; batches cook together).
SKUS: Mapping[str, SkuSpec] = {
    s.sku_id: s
    for s in (
        SkuSpec("roast-chicken", "hot-line", 18 * 60, 30, "normal", 20, frozenset({"oven"}), 6),
        SkuSpec("veg-lasagne", "hot-line", 25 * 60, 45, "normal", 30, frozenset({"oven"}), 4),
        SkuSpec("fries", "fry", 5 * 60, 15, "high", 8, frozenset({"fryer"}), 4),
        SkuSpec("caesar-salad", "cold-prep", 6 * 60, 30, "low", 20, frozenset(), 4),
    )
}
STATIONS = (StationSpec("hot-line", 4), StationSpec("fry", 2), StationSpec("cold-prep", 2))
#: (equipment id, kind, station): four ovens serve the hot line's four slots.
EQUIPMENT = (
    *((f"oven-{n}", "oven", "hot-line") for n in range(1, 5)),
    ("fryer-1", "fryer", "fry"),
    ("fryer-2", "fryer", "fry"),
)
MIX = (
    SkuShare("roast-chicken", 3.0, "normal", 1, 3),
    SkuShare("veg-lasagne", 2.0, "normal", 1, 2),
    SkuShare("fries", 2.0, "high", 1, 2),
    SkuShare("caesar-salad", 1.5, "low", 1, 2),
)


#: Orders per kitchen-day hour *per kitchen*: a lunch rush and a catering spike on top of it.
RUSH_DEMAND = DemandProfile(
    base_per_h=6.0,
    rushes=(Rush(12.5, 0.6, 14.0),),
    spikes=(Spike(12.2, 0.3, 2.5),),
    sku_mix=MIX,
    promise_min=(40.0, 75.0),
)


@dataclass(frozen=True)
class Outage:
    """Kitchen ``kitchen`` (1-based) loses power over ``[start_h, end_h)``: nothing starts there."""

    kitchen: int
    start_h: float
    end_h: float


@dataclass(frozen=True)
class EquipmentFault:
    """``equipment_id`` of kitchen ``kitchen`` (1-based) is failed over ``[start_h, end_h)``."""

    kitchen: int
    equipment_id: str
    start_h: float
    end_h: float


@dataclass(frozen=True)
class RushDay:
    """The day both policies play: demand per kitchen, kitchens, geography, faults, noise.

    Every kitchen is the nearest for ``stores_per_kitchen`` stores (4-9 min away); other
    kitchens are 9-20 min away, so nearest-kitchen routing is balanced, not a strawman.
    """

    kitchens: int = 4
    start_h: float = 10.5
    end_h: float = 15.0
    demand_per_kitchen: DemandProfile = RUSH_DEMAND
    stores_per_kitchen: int = 2
    #: Kitchen number (1-based) that is systematically slower, and by how much.
    slow_kitchen: int = 3
    slow_factor: float = 1.35
    #: Log-normal noise of every prep time (sd of the log).
    noise_sd: float = 0.12
    outages: tuple[Outage, ...] = (Outage(2, 12.25, 13.0),)
    faults: tuple[EquipmentFault, ...] = (EquipmentFault(1, "oven-2", 11.75, 14.0),)
    #: Brigade's control loop period, lease horizon and start-by grace (control-plane defaults).
    tick_s: float = 60.0
    lease_horizon_s: float = 600.0
    start_by_grace_s: float = 120.0
    #: Margin the planner and re-planner keep before the due time beyond the p90.
    guard_s: float = 0.0
    #: Simulate past ``end_h`` until every accepted order is resolved, at most this long.
    drain_h: float = 4.0

    def __post_init__(self) -> None:
        numbers = [o.kitchen for o in self.outages] + [f.kitchen for f in self.faults]
        if self.slow_kitchen:
            numbers.append(self.slow_kitchen)
        if any(not 1 <= n <= self.kitchens for n in numbers):
            raise ValueError(
                f"the rush day's faults and slow kitchen need kitchens 1..{max(numbers)},"
                f" not {self.kitchens}"
            )


@dataclass(frozen=True)
class Order:
    """One order of the day (both policies see the same list)."""

    order_id: str
    at: float
    sku_id: str
    quantity: int
    priority: str
    promised_by: float
    store: str


def kitchen_ids(day: RushDay) -> tuple[str, ...]:
    """``k1`` .. ``kN``."""
    return tuple(f"k{n}" for n in range(1, day.kitchens + 1))


def day_orders(day: RushDay, seed: int) -> list[Order]:
    """The seeded orders of ``day``: the demand curve scaled to the number of kitchens."""
    profile = replace(
        day.demand_per_kitchen.scaled(day.kitchens),
        destinations=day.kitchens * day.stores_per_kitchen,
    )
    planned = generate(profile, seed=seed, start_h=day.start_h, end_h=day.end_h)
    return [
        Order(
            f"o{n:05d}",
            p.at_h * 3600.0,
            p.sku_id,
            p.quantity,
            p.priority,
            (p.at_h * 60.0 + p.promise_min) * 60.0,
            p.destination,
        )
        for n, p in enumerate(planned)
    ]


def transport_s(day: RushDay, seed: int) -> dict[tuple[str, str], float]:
    """Seconds from each kitchen to each store: store ``i`` is nearest to kitchen ``i mod N``."""
    rng = random.Random(f"geo:{seed}")
    kitchens = kitchen_ids(day)
    table: dict[tuple[str, str], float] = {}
    for n in range(day.kitchens * day.stores_per_kitchen):
        store = f"store-{n + 1}"
        for k, kitchen_id in enumerate(kitchens):
            near = k == n % day.kitchens
            table[kitchen_id, store] = 60.0 * (rng.uniform(4, 9) if near else rng.uniform(9, 20))
    return table


def actual_prep_s(day: RushDay, seed: int, kitchen_id: str, order_id: str, sku: SkuSpec) -> float:
    """The real prep time of the task first serving ``order_id`` at ``kitchen_id``.

    The noise is drawn per order, so both policies cook an order's food equally fast at the
    same kitchen; the slow kitchen is slower for everyone.
    """
    noise = random.Random(f"prep:{seed}:{order_id}").gauss(0.0, day.noise_sd)
    slow = day.slow_factor if kitchen_id == f"k{day.slow_kitchen}" else 1.0
    return sku.duration_s * slow * math.exp(noise)


# --- outcomes and metrics (pure) ---------------------------------------------------------------

Outcome = Literal["on_time", "late", "wasted", "never_made", "rejected"]
EPS_S = 1.0


@dataclass(frozen=True)
class OrderOutcome:
    """What became of one order: accepted or why not, when its food was ready, how it ended.

    ``alerts`` are the ``(raised_at, lead_s)`` of every SLA alert raised for it.
    """

    order_id: str
    quantity: int
    promised_by: float
    outcome: Outcome
    reason: str = ""
    ready_at: float | None = None
    hold_s: float | None = None
    alerts: tuple[tuple[float, float], ...] = ()

    @property
    def accepted(self) -> bool:
        return self.outcome != "rejected"

    @property
    def late(self) -> bool:
        """Not handed over fresh by the promise: late, wasted or never made."""
        return self.outcome in ("late", "wasted", "never_made")


def handover(
    *, ready_at: float, promised_by: float, transport: float, sku: SkuSpec
) -> tuple[Outcome, float]:
    """How food ready at ``ready_at`` ends, and how long it waited before leaving.

    It leaves at ``promised_by - transport`` (or when ready, if later) and is handed over at the
    promise (or on arrival, if later). Older than the freshness window at handover, or held
    longer than the holding limit before leaving: wasted. Arriving after the promise: late.

    >>> chicken = SKUS["roast-chicken"]  # 30 min fresh, 20 min holding limit
    >>> handover(ready_at=0.0, promised_by=3600.0, transport=600.0, sku=chicken)
    ('wasted', 3000.0)
    >>> handover(ready_at=2700.0, promised_by=3600.0, transport=600.0, sku=chicken)
    ('on_time', 300.0)
    """
    departs = max(ready_at, promised_by - transport)
    hold = departs - ready_at
    arrives = departs + transport
    age = max(arrives, promised_by) - ready_at
    hold_limit = math.inf if sku.max_hold_min is None else sku.max_hold_min * 60.0
    if age > sku.freshness_window_min * 60.0 + EPS_S or hold > hold_limit + EPS_S:
        return "wasted", hold
    return ("late" if arrives > promised_by + EPS_S else "on_time"), hold


def metrics(outcomes: list[OrderOutcome]) -> dict[str, Any]:
    """The comparison's figures for one policy.

    ``sla_alert_recall``: the share of late orders with an alert raised before their promise
    (``None`` when no order was late); ``sla_alert_median_lead_s``: median of every raised
    alert's lead (promise minus raise time).
    """
    accepted = [o for o in outcomes if o.accepted]
    late = [o for o in accepted if o.late]
    holds = [o.hold_s for o in accepted if o.hold_s is not None]
    leads = [lead for o in outcomes for _, lead in o.alerts]
    alerted_in_time = [o for o in late if any(at < o.promised_by for at, _ in o.alerts)]
    alerted = [o for o in accepted if o.alerts]
    rejected_by: dict[str, int] = {}
    for o in outcomes:
        if not o.accepted:
            rejected_by[o.reason] = rejected_by.get(o.reason, 0) + 1
    on_time = len(accepted) - len(late)
    return {
        "orders_submitted": len(outcomes),
        "orders_accepted": len(accepted),
        "orders_rejected": len(outcomes) - len(accepted),
        "orders_late": len(late),
        "on_time_orders": on_time,
        "on_time_ratio": round(on_time / len(accepted), 4) if accepted else None,
        "mean_hold_s": round(statistics.fmean(holds), 1) if holds else None,
        "waste_units": sum(o.quantity for o in accepted if o.outcome == "wasted"),
        "sla_alerts": len(leads),
        "sla_alert_median_lead_s": round(statistics.median(leads), 1) if leads else None,
        "sla_alert_recall": round(len(alerted_in_time) / len(late), 4) if late else None,
        "sla_alert_precision": (
            round(sum(o.late for o in alerted) / len(alerted), 4) if alerted else None
        ),
        "late_by_kind": {
            kind: sum(o.outcome == kind for o in late) for kind in ("late", "wasted", "never_made")
        },
        "rejected_by_reason": dict(sorted(rejected_by.items())),
    }


# --- the simulation ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    """A prep task in the simulation (one SKU batch for one or more orders)."""

    task_id: str
    kitchen_id: str
    sku: SkuSpec
    order_ids: list[str]
    state: str = "planned"  # planned | leased | started | done
    planned_start: float = 0.0
    planned_finish: float = 0.0
    finish_by: float = math.inf
    fresh_from: float = -math.inf
    start_by: float | None = None
    ever_leased: bool = False
    started_at: float | None = None


@dataclass
class _OrderState:
    order: Order
    outcome: Outcome | None = None
    reason: str = ""
    task: _Task | None = None
    ready_at: float | None = None
    hold_s: float | None = None
    alerts: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    """One policy's run: per-order outcomes, its metrics, and where work was placed when.

    ``placements`` are ``(time, kitchen_id, why)`` of every plan, move and start.
    """

    policy: Policy
    outcomes: tuple[OrderOutcome, ...]
    metrics: Mapping[str, Any]
    placements: tuple[tuple[float, str, str], ...]


# Simultaneous events: state changes first, then completions, arrivals, the control loop, starts.
_RANK = {"outage": 0, "fault": 0, "done": 1, "arrive": 2, "tick": 3, "wake": 4}


class _Simulation:
    """One policy over one day; :meth:`run` plays the event heap to the end."""

    def __init__(self, day: RushDay, seed: int, policy: Policy, orders: list[Order]) -> None:
        self.day, self.seed, self.policy = day, seed, policy
        self.kitchens = kitchen_ids(day)
        self.transport = transport_s(day, seed)
        self.orders = {o.order_id: _OrderState(o) for o in orders}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, str, Any]] = []
        self._seq = 0
        self.online = dict.fromkeys(self.kitchens, True)
        self.offline_since: dict[str, float] = {}
        self.failed: set[tuple[str, str]] = set()
        self.running: dict[tuple[str, str], int] = {}
        self.tasks: dict[str, _Task] = {}
        self.fifo: dict[tuple[str, str], list[_Task]] = {}
        self.placements: list[tuple[float, str, str]] = []
        # Brigade's control-plane state.
        self.model = prep_times.PrepTimeModel()
        self.sla_state = sla.SlaState()
        self.bp_state = backpressure.BackpressureState()
        self.decisions: dict[str, backpressure.Decision] = {}
        self.pending: list[Order] = []
        self.end_s = day.end_h * 3600.0
        self.horizon_s = (day.end_h + day.drain_h) * 3600.0

    # -- the event loop ------------------------------------------------------------------------

    def push(self, at: float, kind: str, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, _RANK[kind], self._seq, kind, payload))

    def run(self) -> RunResult:
        for order in sorted(self.orders.values(), key=lambda s: (s.order.at, s.order.order_id)):
            self.push(order.order.at, "arrive", order.order.order_id)
        for outage in self.day.outages:
            kitchen_id = self.kitchens[outage.kitchen - 1]
            self.push(outage.start_h * 3600.0, "outage", (kitchen_id, False))
            self.push(outage.end_h * 3600.0, "outage", (kitchen_id, True))
        for fault in self.day.faults:
            unit = (self.kitchens[fault.kitchen - 1], fault.equipment_id)
            self.push(fault.start_h * 3600.0, "fault", (unit, True))
            self.push(fault.end_h * 3600.0, "fault", (unit, False))
        if self.policy == "brigade":
            self.push(self.day.start_h * 3600.0, "tick")
        handlers: dict[str, Callable[[Any], None]] = {
            "arrive": self.on_arrive,
            "done": self.on_done,
            "tick": self.on_tick,
            "wake": self.on_wake,
            "outage": self.on_outage,
            "fault": self.on_fault,
        }
        while self._heap and self._heap[0][0] <= self.horizon_s:
            at, _, _, kind, payload = heapq.heappop(self._heap)
            self.now = at
            handlers[kind](payload)
        outcomes = tuple(self._outcome(s) for s in self.orders.values())
        return RunResult(self.policy, outcomes, metrics(list(outcomes)), tuple(self.placements))

    def _outcome(self, state: _OrderState) -> OrderOutcome:
        return OrderOutcome(
            state.order.order_id,
            state.order.quantity,
            state.order.promised_by,
            state.outcome or "never_made",
            state.reason,
            state.ready_at,
            state.hold_s,
            tuple(state.alerts),
        )

    def open_orders(self) -> Iterator[_OrderState]:
        return (s for s in self.orders.values() if s.task is not None and s.outcome is None)

    # -- the kitchens (physical: the same for both policies) -----------------------------------

    def spec(self, kitchen_id: str) -> KitchenSpec:
        """The kitchen as the control plane sees it now."""
        online = self.online[kitchen_id]
        return KitchenSpec(
            kitchen_id,
            "active" if online else "offline",
            STATIONS,
            tuple(
                EquipmentUnit(
                    unit_id,
                    kind,
                    station,
                    "failed" if (kitchen_id, unit_id) in self.failed else "ok",
                )
                for unit_id, kind, station in EQUIPMENT
            ),
            last_sync_at=self.now if online else self.offline_since[kitchen_id],
        )

    def free_slots(self, kitchen: KitchenSpec, station_id: str) -> int:
        return kitchen.effective_slots(station_id) - self.running.get(
            (kitchen.kitchen_id, station_id), 0
        )

    def start(self, task: _Task, why: str) -> None:
        key = (task.kitchen_id, task.sku.station_id)
        self.running[key] = self.running.get(key, 0) + 1
        task.state, task.started_at = "started", self.now
        duration = actual_prep_s(self.day, self.seed, task.kitchen_id, task.order_ids[0], task.sku)
        self.placements.append((self.now, task.kitchen_id, why))
        self.push(self.now + duration, "done", task)

    def on_done(self, task: _Task) -> None:
        key = (task.kitchen_id, task.sku.station_id)
        self.running[key] -= 1
        task.state = "done"
        if self.policy == "brigade":
            assert task.started_at is not None
            observation = prep_times.PrepObservation(
                task.kitchen_id, task.sku.sku_id, task.started_at, self.now
            )
            self.model = prep_times.observe(
                self.model, self.now, observation, nominal_s=task.sku.duration_s
            )
        for order_id in task.order_ids:
            state = self.orders[order_id]
            order = state.order
            outcome, hold = handover(
                ready_at=self.now,
                promised_by=order.promised_by,
                transport=self.transport[task.kitchen_id, order.store],
                sku=task.sku,
            )
            state.outcome, state.ready_at, state.hold_s = outcome, self.now, hold
        self.on_wake(task.kitchen_id)

    def on_outage(self, payload: tuple[str, bool]) -> None:
        kitchen_id, online = payload
        self.online[kitchen_id] = online
        if not online:
            self.offline_since[kitchen_id] = self.now
        self.on_wake(kitchen_id)

    def on_fault(self, payload: tuple[tuple[str, str], bool]) -> None:
        unit, failed = payload
        (self.failed.add if failed else self.failed.discard)(unit)
        self.on_wake(unit[0])

    def on_wake(self, kitchen_id: str) -> None:
        """Start what the kitchen may start now (it starts nothing while it has no power)."""
        if not self.online[kitchen_id]:
            return
        kitchen = self.spec(kitchen_id)
        for station in STATIONS:
            free = self.free_slots(kitchen, station.station_id)
            if free <= 0:
                continue
            if self.policy != "brigade":
                queue = self.fifo.get((kitchen_id, station.station_id), [])
                for task in [t for t in queue if t.planned_start <= self.now][:free]:
                    queue.remove(task)
                    self.start(task, "start")
                continue
            # An agent starts a leased task at its planned start, never after its start-by.
            ready = sorted(
                (
                    t
                    for t in self.tasks.values()
                    if t.kitchen_id == kitchen_id
                    and t.sku.station_id == station.station_id
                    and t.state == "leased"
                    and t.planned_start <= self.now <= (t.start_by or math.inf)
                ),
                key=lambda t: (t.start_by, t.planned_start, t.task_id),
            )
            for task in ready[:free]:
                self.start(task, "start")

    # -- orders --------------------------------------------------------------------------------

    def on_arrive(self, order_id: str) -> None:
        state = self.orders[order_id]
        order = state.order
        sku = SKUS[order.sku_id]
        if self.policy != "brigade":
            candidates = [k for k in self.kitchens if self.online[k]]
            if not candidates:
                state.outcome, state.reason = "rejected", "sku_not_offered"
                return
            kitchen_id = min(candidates, key=lambda k: (self.transport[k, order.store], k))
            # Cooked to the ticket: started when the recipe's nominal time says it will be
            # ready for the driver (or at once if that time has passed), first come first served.
            due = order.promised_by - self.transport[kitchen_id, order.store] - sku.duration_s
            if self.policy == "baseline_asap":
                due = self.now
            task = _Task(order_id, kitchen_id, sku, [order_id], planned_start=max(due, self.now))
            if due > self.now:
                self.push(due, "wake", kitchen_id)
            self.tasks[task.task_id] = task
            state.task = task
            self.fifo.setdefault((kitchen_id, sku.station_id), []).append(task)
            self.placements.append((self.now, kitchen_id, "plan"))
            self.on_wake(kitchen_id)
            return
        candidates = [
            k
            for k in self.kitchens
            if self.online[k] and self.spec(k).has_healthy(sku.equipment_kinds)
        ]
        scoped = [
            self.decisions[s] for s in (backpressure.GLOBAL, *candidates) if s in self.decisions
        ]
        verdict = backpressure.admit_order(order.priority, scoped)
        if not verdict.accept:
            state.outcome, state.reason = "rejected", verdict.reason or "backpressure"
            return
        self.pending.append(order)

    # -- Brigade's control loop ----------------------------------------------------------------

    def world(self) -> World:
        bookings = []
        for task in self.live_tasks():
            start, end = task.planned_start, task.planned_finish
            if task.state == "started":
                assert task.started_at is not None
                p90 = self.model.estimate(
                    task.kitchen_id, task.sku.sku_id, nominal_s=task.sku.duration_s
                ).p90_s
                start, end = task.started_at, max(task.started_at + p90, self.now + self.day.tick_s)
            bookings.append(Booking(task.kitchen_id, task.sku.station_id, start, end, task.task_id))
        return World(tuple(self.spec(k) for k in self.kitchens), SKUS, tuple(bookings), self.model)

    def live_tasks(self) -> list[_Task]:
        return [t for t in self.tasks.values() if t.state in ("planned", "leased", "started")]

    def on_tick(self, _: Any) -> None:
        self.release_expired_leases()
        self.replan()
        self.plan_pending()
        self.lease()
        at_risk = self.predict_and_alert()
        self.step_backpressure(at_risk)
        unresolved = any(True for _ in self.open_orders()) or self.pending
        if self.now < self.end_s or unresolved:
            self.push(self.now + self.day.tick_s, "tick")

    def release_expired_leases(self) -> None:
        """A lease whose start-by passed without a start, reported by a kitchen that synced
        since: the agent did not start it and never will (the control plane's reconcile)."""
        for task in self.live_tasks():
            if (
                task.state == "leased"
                and task.start_by is not None
                and task.start_by < self.now
                and self.online[task.kitchen_id]
            ):
                task.state, task.start_by = "planned", None

    def replan(self) -> None:
        snapshots = []
        for task in self.live_tasks():
            orders = [self.orders[o].order for o in task.order_ids]
            promised = min(o.promised_by for o in orders)
            # The latest ready time every order allows, from each kitchen, as one "transport".
            transport_by_kitchen = {
                k: promised - min(o.promised_by - self.transport[k, o.store] for o in orders)
                for k in self.kitchens
            }
            snapshots.append(
                replan.TaskSnapshot(
                    task.task_id,
                    task.kitchen_id,
                    task.sku.station_id,
                    task.sku.sku_id,
                    sum(o.quantity for o in orders),
                    task.state,
                    task.planned_start,
                    task.planned_finish,
                    task.finish_by,
                    task.fresh_from,
                    task.ever_leased,
                    task.start_by,
                    promised,
                    transport_by_kitchen,
                )
            )
        result = replan.replan(
            self.now, snapshots, self.world(), replan.ReplanSettings(guard_s=self.day.guard_s)
        )
        for move in result.moves:
            task = self.tasks[move.task_id]
            task.kitchen_id, task.state = move.to_kitchen_id, "planned"
            task.planned_start, task.planned_finish = move.planned_start, move.planned_finish
            task.ever_leased, task.start_by = False, None
            self.placements.append((self.now, move.to_kitchen_id, f"move:{move.reason}"))

    def plan_pending(self) -> None:
        if not self.pending:
            return
        requests = [
            OrderRequest(
                ((o.sku_id, o.quantity),),
                o.promised_by,
                0.0,
                o.order_id,
                o.priority,
                transport_min_by_kitchen={
                    k: self.transport[k, o.store] / 60.0 for k in self.kitchens
                },
            )
            for o in self.pending
        ]
        self.pending = []
        plan = plan_batch(
            self.now, requests, self.world(), PlannerSettings(guard_s=self.day.guard_s)
        )
        for order_id, rejection in plan.rejections:
            state = self.orders[order_id]
            state.outcome, state.reason = "rejected", rejection.reason
        for planned in plan.tasks:
            task = _Task(
                planned.task_key,
                planned.kitchen_id,
                SKUS[planned.sku_id],
                [line.order_id for line in planned.lines],
                planned_start=planned.planned_start,
                planned_finish=planned.planned_finish,
                finish_by=planned.finish_by,
                fresh_from=planned.fresh_from,
            )
            self.tasks[task.task_id] = task
            for order_id in task.order_ids:
                self.orders[order_id].task = task
            self.placements.append((self.now, task.kitchen_id, "plan"))

    def lease(self) -> None:
        for task in self.live_tasks():
            if (
                task.state == "planned"
                and self.online[task.kitchen_id]
                and task.planned_start <= self.now + self.day.lease_horizon_s
            ):
                task.state, task.ever_leased = "leased", True
                task.start_by = max(task.planned_start, self.now) + self.day.start_by_grace_s
                self.push(max(task.planned_start, self.now), "wake", task.kitchen_id)

    def predict_and_alert(self) -> dict[str, int]:
        """SLA predictions and alerts; returns the open orders at risk per kitchen."""
        open_orders = list(self.open_orders())
        queued = [
            sla.QueuedTask(
                t.task_id,
                t.kitchen_id,
                t.sku.station_id,
                t.sku.sku_id,
                t.state,
                t.planned_start,
                t.started_at,
            )
            for t in self.live_tasks()
        ]
        requests = [
            sla.OpenOrder(
                s.order.order_id,
                s.order.promised_by,
                self.transport[s.task.kitchen_id, s.order.store] / 60.0,
                s.task.sku.freshness_window_min,
                (s.task.task_id,),
            )
            for s in open_orders
            if s.task is not None
        ]
        predictions = sla.predict(self.now, requests, queued, self.world())
        promised = {s.order.order_id: s.order.promised_by for s in open_orders}
        self.sla_state, events = sla.evaluate(self.sla_state, self.now, predictions, promised)
        for event in events:
            if event.kind == "raised":
                self.orders[event.order_id].alerts.append((event.at, event.lead_s))
        at_risk: dict[str, int] = {}
        for s in open_orders:
            p = predictions.get(s.order.order_id)
            if p is not None and sla.at_risk(p) and s.task is not None:
                at_risk[s.task.kitchen_id] = at_risk.get(s.task.kitchen_id, 0) + 1
        return at_risk

    def step_backpressure(self, at_risk: Mapping[str, int]) -> None:
        work: dict[str, float] = dict.fromkeys(self.kitchens, 0.0)
        open_count: dict[str, int] = dict.fromkeys(self.kitchens, 0)
        for task in self.live_tasks():
            p50 = self.model.estimate(
                task.kitchen_id, task.sku.sku_id, nominal_s=task.sku.duration_s
            ).p50_s
            elapsed = self.now - task.started_at if task.started_at is not None else 0.0
            work[task.kitchen_id] += max(p50 - elapsed, 0.0)
        for s in self.open_orders():
            assert s.task is not None
            open_count[s.task.kitchen_id] += 1
        signals = {
            k: backpressure.kitchen_signals(
                self.spec(k),
                open_work_s=work[k],
                open_orders=open_count[k],
                orders_at_risk=at_risk.get(k, 0),
                ingestion_lag_s=0.0,
            )
            for k in self.kitchens
        }
        signals[backpressure.GLOBAL] = backpressure.fleet_signals(signals)
        self.bp_state, self.decisions = backpressure.step(self.bp_state, self.now, signals)


def simulate(
    day: RushDay, seed: int, policy: Policy, orders: list[Order] | None = None
) -> RunResult:
    """Play ``day`` under ``policy``; ``orders`` default to the seeded demand of the day."""
    return _Simulation(day, seed, policy, day_orders(day, seed) if orders is None else orders).run()


def compare(day: RushDay, seed: int) -> dict[str, Any]:
    """Every policy on the same seeded day: ``{"brigade", "baseline", "baseline_asap", "seed",
    "params"}``."""
    orders = day_orders(day, seed)
    report: dict[str, Any] = {
        policy: dict(simulate(day, seed, policy, orders).metrics) for policy in POLICIES
    }
    for policy in POLICIES:
        report[policy] = {"policy": policy, "seed": seed, **report[policy]}
    report["seed"] = seed
    report["params"] = asdict(day)
    return report


#: Rows of the side-by-side table: (label, key).
TABLE_ROWS = (
    ("orders submitted", "orders_submitted"),
    ("orders accepted", "orders_accepted"),
    ("orders rejected", "orders_rejected"),
    ("orders late", "orders_late"),
    ("on-time orders", "on_time_orders"),
    ("on-time ratio (of accepted)", "on_time_ratio"),
    ("mean hold (s)", "mean_hold_s"),
    ("waste (units)", "waste_units"),
    ("SLA alerts", "sla_alerts"),
    ("SLA alert median lead (s)", "sla_alert_median_lead_s"),
    ("SLA alert recall", "sla_alert_recall"),
)


def format_table(report: Mapping[str, Any]) -> str:
    """The side-by-side table of a :func:`compare` report."""

    def shown(value: Any) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    lines = [f"{'rush, seed ' + str(report['seed']):<30}" + "".join(f"{p:>15}" for p in POLICIES)]
    for label, key in TABLE_ROWS:
        lines.append(f"{label:<30}" + "".join(f"{shown(report[p][key]):>15}" for p in POLICIES))
    return "\n".join(lines)
