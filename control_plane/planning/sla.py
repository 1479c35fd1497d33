"""Predictive freshness SLA: when will each open order be ready and handed over, and alerts.

Pure. :func:`predict` replays every station's queue (tasks started, then by planned start) on its
effective slots with learned p50 and p90 durations, giving each open order a predicted ready time,
handover time, margin against its promise and freshness window, and a probability of a miss.
:func:`evaluate` turns predictions into alerts: "order X will miss its SLA in N minutes", raised as
soon as the margin goes negative, with its lead time and cause, and cleared only once the margin
has recovered past ``clear_margin_s`` (hysteresis, so it does not flap around zero).

Remaining time of a started task: its p50/p90 minus the time elapsed, but never less than a
floor that grows with how overdue it is (a task past its p90 is not about to finish "now").

Causes, most specific first: ``stranded`` (its kitchen is unreachable), ``equipment_down`` (its
station lost slots), ``slow_kitchen`` (learned p50 well above the recipe, or a task overdue past
its p90), else ``queue``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from control_plane.planning.world import KitchenSpec, World

SLOW_FACTOR = 1.15


@dataclass(frozen=True)
class QueuedTask:
    """An unfinished prep task (``planned``, ``leased`` or ``started``)."""

    task_id: str
    kitchen_id: str
    station_id: str
    sku_id: str
    state: str
    planned_start: float
    started_at: float | None = None


@dataclass(frozen=True)
class OpenOrder:
    """An order not yet handed over, with the tasks that make it."""

    order_id: str
    promised_by: float
    transport_min: float
    freshness_window_min: float
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Prediction:
    """When an order will be ready and handed over, and by how much it makes or misses."""

    order_id: str
    ready_p50: float
    ready_p90: float
    handover_at: float
    margin_s: float  # promise margin (p90) or freshness margin, whichever is smaller
    miss_probability: float
    cause: str


@dataclass(frozen=True)
class SlaSettings:
    unreachable_after_s: float = 120.0
    clear_margin_s: float = 120.0
    # Backpressure counts an order at risk only when it is more likely late than not, or its
    # p90 margin is worse than this: plans are made just in time (p90 margin about zero), so a
    # small drift of the learned p90 must not read as a fleet at risk and shed good orders.
    risk_tolerance_s: float = 300.0


def at_risk(prediction: Prediction, settings: SlaSettings = SlaSettings()) -> bool:
    """Whether an order counts as *at risk* for backpressure (not for alerts: those fire as
    soon as the margin is negative, to give operators the longest lead).

    >>> from dataclasses import replace
    >>> p = Prediction("o1", 100.0, 160.0, 200.0, -60.0, 0.2, "queue")
    >>> at_risk(p), at_risk(replace(p, margin_s=-400.0)), at_risk(replace(p, miss_probability=0.6))
    (False, True, True)
    """
    return prediction.miss_probability >= 0.5 or prediction.margin_s < -settings.risk_tolerance_s


def predict(
    now: float,
    orders: Sequence[OpenOrder],
    tasks: Sequence[QueuedTask],
    world: World,
    settings: SlaSettings = SlaSettings(),
) -> dict[str, Prediction]:
    """Predict every open order at ``now``."""
    kitchens = {k.kitchen_id: k for k in world.kitchens}
    finish: dict[str, tuple[float, float, str]] = {}
    stations: dict[tuple[str, str], list[QueuedTask]] = {}
    for task in tasks:
        stations.setdefault((task.kitchen_id, task.station_id), []).append(task)
    for (kitchen_id, station_id), queue in sorted(stations.items()):
        kitchen = kitchens.get(kitchen_id)
        finish.update(_replay(now, kitchen, station_id, queue, world, settings))
    predictions: dict[str, Prediction] = {}
    for order in sorted(orders, key=lambda o: o.order_id):
        known = [finish[t] for t in order.task_ids if t in finish]
        if not known:
            continue
        ready50 = max(k[0] for k in known)
        ready90 = max(k[1] for k in known)
        cause = min((k[2] for k in known), key=_CAUSES.index)
        transport_s = order.transport_min * 60.0
        arrival = ready90 + transport_s
        handover = max(order.promised_by, arrival)
        promise_margin = order.promised_by - arrival
        freshness_margin = order.freshness_window_min * 60.0 - (
            max(order.promised_by, ready50 + transport_s) - ready50
        )
        sigma = max((ready90 - ready50) / 1.2816, 1e-9)
        slack = order.promised_by - transport_s - ready50
        miss = 0.5 * math.erfc(slack / sigma / math.sqrt(2.0)) if math.isfinite(slack) else 1.0
        predictions[order.order_id] = Prediction(
            order.order_id,
            ready50,
            ready90,
            handover,
            min(promise_margin, freshness_margin),
            miss,
            cause,
        )
    return predictions


_CAUSES = ("stranded", "equipment_down", "slow_kitchen", "queue")


def _replay(
    now: float,
    kitchen: KitchenSpec | None,
    station_id: str,
    queue: list[QueuedTask],
    world: World,
    settings: SlaSettings,
) -> dict[str, tuple[float, float, str]]:
    if kitchen is None:
        return {t.task_id: (math.inf, math.inf, "stranded") for t in queue}
    slots = kitchen.effective_slots(station_id)
    nominal_slots = next((s.slots for s in kitchen.stations if s.station_id == station_id), 0)
    reachable = kitchen.last_sync_at is not None and (
        now - kitchen.last_sync_at <= settings.unreachable_after_s
    )
    base_cause = (
        "stranded"
        if not reachable or kitchen.status == "offline"
        else "equipment_down"
        if slots < nominal_slots
        else "queue"
    )
    ordered = sorted(
        queue,
        key=lambda t: (t.state != "started", t.started_at or t.planned_start, t.task_id),
    )
    free50 = [now] * max(slots, 0)
    free90 = [now] * max(slots, 0)
    out: dict[str, tuple[float, float, str]] = {}
    for task in ordered:
        sku = world.skus.get(task.sku_id)
        nominal = sku.duration_s if sku else 0.0
        estimate = world.prep.estimate(task.kitchen_id, task.sku_id, nominal_s=nominal)
        p50, p90 = estimate.p50_s, estimate.p90_s
        cause = base_cause
        if cause == "queue" and nominal and p50 > nominal * SLOW_FACTOR:
            cause = "slow_kitchen"
        if task.state == "started" and task.started_at is not None:
            elapsed = max(now - task.started_at, 0.0)
            spread = max(p90 - p50, 0.05 * p50, 1.0)
            overdue = max(elapsed - p90, 0.0)
            rem50 = max(p50 - elapsed, 0.25 * spread + 0.1 * overdue)
            rem90 = max(p90 - elapsed, rem50 + 0.5 * spread + 0.2 * overdue)
            if overdue > 0 and cause == "queue":
                cause = "slow_kitchen"
            end50, end90 = now + rem50, now + rem90
            if free50:
                heapq.heapreplace(free50, max(free50[0], end50))
                heapq.heapreplace(free90, max(free90[0], end90))
            out[task.task_id] = (end50, end90, cause)
            continue
        if not free50:
            out[task.task_id] = (math.inf, math.inf, cause)
            continue
        start50 = max(heapq.heappop(free50), task.planned_start, now)
        start90 = max(heapq.heappop(free90), task.planned_start, now)
        heapq.heappush(free50, start50 + p50)
        heapq.heappush(free90, start90 + p90)
        out[task.task_id] = (start50 + p50, start90 + p90, cause)
    return out


@dataclass(frozen=True)
class ActiveAlert:
    """An alert that is raised and not yet cleared."""

    raised_at: float
    lead_s: float
    cause: str


@dataclass(frozen=True)
class SlaState:
    """Alerts currently raised, by order."""

    active: Mapping[str, ActiveAlert] = field(default_factory=dict)


@dataclass(frozen=True)
class SlaEvent:
    """An alert raised or cleared (written to the audit trail and metrics by the caller)."""

    kind: str  # raised | cleared | closed
    order_id: str
    at: float
    lead_s: float
    cause: str
    margin_s: float
    message: str


def evaluate(
    state: SlaState,
    now: float,
    predictions: Mapping[str, Prediction],
    promised_by: Mapping[str, float],
    settings: SlaSettings = SlaSettings(),
) -> tuple[SlaState, list[SlaEvent]]:
    """Raise, keep or clear alerts from this round's predictions.

    ``promised_by`` gives each open order's promise (the lead time is measured to it). Orders no
    longer predicted (done, handed over, cancelled) have their alert closed.
    """
    active = dict(state.active)
    events: list[SlaEvent] = []
    for order_id in sorted(predictions):
        p = predictions[order_id]
        alert = active.get(order_id)
        if alert is None and p.margin_s < 0:
            lead = promised_by[order_id] - now
            minutes = max(math.ceil(lead / 60.0), 0)
            message = (
                f"order {order_id} will miss its SLA in {minutes} minutes"
                f" (cause: {p.cause.replace('_', ' ')}, margin {p.margin_s:.0f} s)"
            )
            active[order_id] = ActiveAlert(now, lead, p.cause)
            events.append(SlaEvent("raised", order_id, now, lead, p.cause, p.margin_s, message))
        elif alert is not None and p.margin_s >= settings.clear_margin_s:
            del active[order_id]
            message = f"order {order_id} is back on time (margin {p.margin_s:.0f} s)"
            events.append(
                SlaEvent("cleared", order_id, now, alert.lead_s, alert.cause, p.margin_s, message)
            )
    for order_id in sorted(set(active) - set(predictions)):
        alert = active.pop(order_id)
        events.append(
            SlaEvent("closed", order_id, now, alert.lead_s, alert.cause, 0.0, "order closed")
        )
    return SlaState(active), events
