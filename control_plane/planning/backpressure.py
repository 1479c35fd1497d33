"""Backpressure: ``normal -> throttle -> shed -> pause`` per kitchen and globally (SPEC 5).

Pure: :func:`step` takes the controller state, ``now`` and the current signals of every scope
(each kitchen, and ``"*"`` for the whole fleet) and returns the new state and one
:class:`Decision` per scope: its level, the actions intake must apply, and why.

Each signal maps to a level through a table of thresholds (:data:`THRESHOLDS`); the scope's
*target* is the worst of them. Hysteresis keeps it from flapping:

- **Up** one level per step as soon as a signal crosses the level's *enter* threshold.
- **Down** one level only when every signal is below that level's *exit* threshold (lower than
  enter) and the scope has dwelt at least ``min_dwell_s`` at its current level.

So within any ``min_dwell_s`` window a scope steps down at most once, and up at most
``levels - 1`` more times than it stepped down. An operator override pins a scope's level until
it expires, and says who and why.

>>> state = BackpressureState()
>>> busy = Signals(queue_work_s=3000.0, capacity_s=2000.0)
>>> state, decisions = step(state, 0.0, {"k1": busy})
>>> decisions["k1"].level, decisions["k1"].why
('throttle', 'queue 150% of capacity >= 120%')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from control_plane.planning.world import KitchenSpec

LEVELS = ("normal", "throttle", "shed", "pause")
GLOBAL = "*"


@dataclass(frozen=True)
class Signals:
    """What one scope looks like now.

    ``queue_work_s``: planned work not yet done; ``capacity_s``: what its healthy slots can do
    within ``horizon_s`` (slots x horizon); ``at_risk_fraction``: open orders with a negative
    SLA margin; ``open_orders``: how many orders that fraction is of (weights the fleet's
    fraction, so one kitchen with its only order at risk does not read as a fleet at risk);
    ``capacity_lost_fraction``: slots removed by failed/offline equipment;
    ``ingestion_lag_s``: age of the oldest unapplied agent event.
    """

    queue_work_s: float = 0.0
    capacity_s: float = 1.0
    at_risk_fraction: float = 0.0
    capacity_lost_fraction: float = 0.0
    ingestion_lag_s: float = 0.0
    horizon_s: float = 3600.0
    open_orders: int = 0

    @property
    def load(self) -> float:
        """Queued work per unit of capacity; no work is no load, even with no capacity (a
        kitchen whose equipment has not reported yet is not overloaded, it is empty)."""
        if self.queue_work_s <= 0:
            return 0.0
        return self.queue_work_s / self.capacity_s if self.capacity_s > 0 else math.inf


@dataclass(frozen=True)
class Threshold:
    """Enter/exit thresholds of one signal for throttle, shed and pause."""

    signal: str
    label: str
    enter: tuple[float, float, float]
    exit: tuple[float, float, float]
    percent: bool = True


# Enter above, leave below: the gap between them is the hysteresis band.
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("load", "queue {v} of capacity", (1.2, 1.6, 2.5), (1.0, 1.35, 2.1)),
    Threshold(
        "at_risk_fraction", "{v} of open orders at risk", (0.1, 0.25, 0.5), (0.05, 0.15, 0.35)
    ),
    Threshold(
        "capacity_lost_fraction", "{v} of capacity failed", (0.34, 0.6, 0.99), (0.25, 0.5, 0.9)
    ),
    Threshold(
        "ingestion_lag_s", "ingestion lag {v}", (30.0, 120.0, 600.0), (15.0, 60.0, 300.0), False
    ),
)


@dataclass(frozen=True)
class Override:
    """An operator's pin of a scope's level (audited by the caller)."""

    level: str
    actor: str
    reason: str
    until: float | None = None


@dataclass(frozen=True)
class ScopeState:
    level: int = 0
    since: float = -math.inf


@dataclass(frozen=True)
class BackpressureState:
    """Level of every scope and since when."""

    scopes: Mapping[str, ScopeState] = field(default_factory=dict)


@dataclass(frozen=True)
class Actions:
    """What intake does at a level.

    ``reject_priorities``: SKU/order priorities refused; ``promise_delay_s``: how much later a
    promise to offer instead; ``retry_after_s``: ``429`` + ``Retry-After`` for every new order;
    ``accept_new_work``: whether the scope takes new tasks at all.
    """

    reject_priorities: frozenset[str] = frozenset()
    promise_delay_s: float = 0.0
    retry_after_s: int | None = None
    accept_new_work: bool = True


@dataclass(frozen=True)
class Decision:
    """A scope's level now, what to do, and why (for operators and the audit trail)."""

    scope: str
    level: str
    actions: Actions
    why: str
    changed: bool


@dataclass(frozen=True)
class BackpressureSettings:
    min_dwell_s: float = 60.0
    promise_delay_s: float = 15 * 60.0
    max_retry_after_s: int = 300


def target_level(signals: Signals, current: int) -> tuple[int, str]:
    """The level the signals call for from ``current``, and the worst reason."""
    values = {
        "load": signals.load,
        "at_risk_fraction": signals.at_risk_fraction,
        "capacity_lost_fraction": signals.capacity_lost_fraction,
        "ingestion_lag_s": signals.ingestion_lag_s,
    }
    best, why = 0, "all signals normal"
    for threshold in THRESHOLDS:
        value = values[threshold.signal]
        for level in (3, 2, 1):
            # Above the current level we need the enter threshold; at or below it, the exit one.
            limit = threshold.enter if level > current else threshold.exit
            if value >= limit[level - 1]:
                if level > best:
                    shown = f"{value:.0%}" if threshold.percent else f"{value:.0f} s"
                    bound = limit[level - 1]
                    bound_shown = f"{bound:.0%}" if threshold.percent else f"{bound:.0f} s"
                    best, why = level, f"{threshold.label.format(v=shown)} >= {bound_shown}"
                break
    return best, why


def step(
    state: BackpressureState,
    now: float,
    signals: Mapping[str, Signals],
    overrides: Mapping[str, Override] | None = None,
    settings: BackpressureSettings = BackpressureSettings(),
) -> tuple[BackpressureState, dict[str, Decision]]:
    """Advance every scope in ``signals`` to ``now``; scopes not given keep their state."""
    scopes = dict(state.scopes)
    decisions: dict[str, Decision] = {}
    for scope in sorted(signals):
        current = scopes.get(scope, ScopeState())
        target, why = target_level(signals[scope], current.level)
        override = (overrides or {}).get(scope)
        if override is not None and (override.until is None or now < override.until):
            level = LEVELS.index(override.level)
            why = f"operator override by {override.actor}: {override.reason}"
        elif target > current.level:
            level = current.level + 1
        elif target < current.level and now - current.since >= settings.min_dwell_s:
            level = current.level - 1
            why = f"recovering: {why}"
        else:
            level = current.level
            if target < current.level:
                why = f"holding for {settings.min_dwell_s:.0f} s dwell: {why}"
        changed = level != current.level
        scopes[scope] = ScopeState(level, now) if changed else current
        decisions[scope] = Decision(
            scope, LEVELS[level], _actions(level, signals[scope], settings), why, changed
        )
    return BackpressureState(scopes), decisions


def _actions(level: int, signals: Signals, settings: BackpressureSettings) -> Actions:
    if level == 0:
        return Actions()
    if level == 1:
        return Actions(frozenset({"low"}), settings.promise_delay_s)
    # Retry once the queue could have drained back under the shed exit threshold at the
    # rate its healthy slots work, within sane bounds.
    drain_per_s = signals.capacity_s / signals.horizon_s if signals.horizon_s > 0 else 0.0
    excess_s = max(signals.queue_work_s - THRESHOLDS[0].exit[1] * signals.capacity_s, 0.0)
    wait_s = excess_s / drain_per_s if drain_per_s > 0 else settings.max_retry_after_s
    retry = int(min(max(math.ceil(wait_s), 1), settings.max_retry_after_s))
    if level == 2:
        return Actions(frozenset({"low", "normal", "high"}), 0.0, retry)
    return Actions(frozenset({"low", "normal", "high"}), 0.0, retry, accept_new_work=False)


def kitchen_signals(
    kitchen: KitchenSpec,
    *,
    open_work_s: float,
    open_orders: int,
    orders_at_risk: int,
    ingestion_lag_s: float,
    horizon_s: float = 3600.0,
) -> Signals:
    """A kitchen's signals from its open work, its SLA predictions and its equipment.

    A paused or offline kitchen has no capacity at all.
    """
    nominal = sum(station.slots for station in kitchen.stations)
    healthy = sum(kitchen.effective_slots(station.station_id) for station in kitchen.stations)
    if kitchen.status != "active":
        healthy = 0
    return Signals(
        queue_work_s=open_work_s,
        capacity_s=healthy * horizon_s,
        at_risk_fraction=orders_at_risk / open_orders if open_orders else 0.0,
        capacity_lost_fraction=1.0 - healthy / nominal if nominal else 1.0,
        ingestion_lag_s=ingestion_lag_s,
        horizon_s=horizon_s,
        open_orders=open_orders,
    )


def fleet_signals(kitchens: Mapping[str, Signals]) -> Signals:
    """The fleet as one scope: summed work and capacity, the worst ingestion lag."""
    if not kitchens:
        return Signals()
    scopes = [kitchens[k] for k in sorted(kitchens)]
    capacity = sum(s.capacity_s for s in scopes)
    nominal = sum(
        s.capacity_s / (1.0 - s.capacity_lost_fraction)
        for s in scopes
        if s.capacity_lost_fraction < 1.0
    )
    orders = sum(s.open_orders for s in scopes)
    at_risk = (
        sum(s.at_risk_fraction * s.open_orders for s in scopes) / orders
        if orders
        else sum(s.at_risk_fraction for s in scopes) / len(scopes)
    )
    return Signals(
        queue_work_s=sum(s.queue_work_s for s in scopes),
        capacity_s=capacity,
        at_risk_fraction=at_risk,
        capacity_lost_fraction=1.0 - capacity / nominal if nominal else 1.0,
        ingestion_lag_s=max(s.ingestion_lag_s for s in scopes),
        horizon_s=scopes[0].horizon_s,
        open_orders=orders,
    )


@dataclass(frozen=True)
class IntakeVerdict:
    """What intake answers an order, given the decisions that apply to it."""

    accept: bool
    status: int = 201
    reason: str | None = None
    retry_after_s: int | None = None
    offered_promise_delay_s: float = 0.0
    why: str = ""


def admit_order(priority: str, decisions: list[Decision]) -> IntakeVerdict:
    """Accept or refuse a new order under the global and candidate-kitchen decisions.

    ``priority`` is the order's priority class (or the lowest of its SKUs', if lower). Shed
    answers ``429`` with ``Retry-After``; throttle refuses low priority with ``422`` and
    ``offered_promise_delay_s``, the later promise the client may retry with.

    The global decision binds; among kitchens, the order is refused only when every candidate
    kitchen refuses it (another kitchen may still take it).
    """
    scoped = [d for d in decisions if d.scope == GLOBAL]
    kitchens = [d for d in decisions if d.scope != GLOBAL]
    if kitchens and all(not d.actions.accept_new_work for d in kitchens):
        worst = max(kitchens, key=lambda d: LEVELS.index(d.level))
        scoped.append(worst)
    elif kitchens:
        scoped.append(min(kitchens, key=lambda d: (LEVELS.index(d.level), d.scope)))
    verdict = IntakeVerdict(True)
    for decision in sorted(scoped, key=lambda d: -LEVELS.index(d.level)):
        actions = decision.actions
        if actions.retry_after_s is not None:
            return IntakeVerdict(
                False,
                429,
                f"backpressure_{decision.level}",
                actions.retry_after_s,
                0.0,
                decision.why,
            )
        if priority in actions.reject_priorities:
            return IntakeVerdict(
                False,
                422,
                "backpressure_throttle",
                None,
                actions.promise_delay_s,
                decision.why,
            )
    return verdict
