"""Adaptive concurrency limits of the API itself, one budget per traffic class (SPEC 5).

A pure state machine: :func:`acquire` decides whether a request of a class may run now (or gets
``503`` + ``Retry-After``), :func:`release` feeds back its latency. Each class has its own limit,
adapted AIMD-style against its latency target:

- a request that finished within the target adds ``1 / limit`` (about +1 per limit's worth of
  requests: additive increase);
- one that was slow or failed multiplies the limit by ``backoff`` (multiplicative decrease), at
  most once per ``cooldown_s`` so one burst of slow requests counts once.

Budgets are separate, so agent syncs and operator reads cannot starve order intake or each
other: a class at its limit refuses only its own requests.

>>> state = AdmissionState.of({"intake": ClassBudget(initial=2)})
>>> state, first = acquire(state, "intake", 0.0)
>>> state, second = acquire(state, "intake", 0.0)
>>> state, third = acquire(state, "intake", 0.0)
>>> first.admitted, second.admitted, third.admitted, third.retry_after_s
(True, True, False, 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

DEFAULT_CLASSES = ("intake", "agent_sync", "operator_read")


@dataclass(frozen=True)
class ClassBudget:
    """Limits and latency target of one traffic class."""

    initial: float = 32.0
    min_limit: float = 2.0
    max_limit: float = 256.0
    target_latency_s: float = 0.05
    backoff: float = 0.8
    cooldown_s: float = 1.0


@dataclass(frozen=True)
class ClassState:
    """One class now: its limit, requests running, last decrease, smoothed latency."""

    budget: ClassBudget
    limit: float
    in_flight: int = 0
    last_decrease_at: float = -math.inf
    latency_ewma_s: float = 0.0


@dataclass(frozen=True)
class AdmissionState:
    """Every class's state."""

    classes: Mapping[str, ClassState] = field(default_factory=dict)

    @staticmethod
    def of(budgets: Mapping[str, ClassBudget]) -> AdmissionState:
        """Start every class at its initial limit."""
        return AdmissionState(
            {name: ClassState(b, b.initial) for name, b in sorted(budgets.items())}
        )


@dataclass(frozen=True)
class Admission:
    """Run the request now, or answer ``503`` with ``Retry-After``."""

    admitted: bool
    retry_after_s: int | None = None


def acquire(
    state: AdmissionState, traffic_class: str, now: float
) -> tuple[AdmissionState, Admission]:
    """Admit one request of ``traffic_class`` if it is under its limit."""
    del now  # the decision depends on the counters only; kept for a uniform core signature
    current = state.classes[traffic_class]
    if current.in_flight + 1 > math.floor(current.limit):
        # Roughly how long until a slot frees: one smoothed latency, at least a second.
        retry = max(1, math.ceil(current.latency_ewma_s))
        return state, Admission(False, retry)
    updated = replace(current, in_flight=current.in_flight + 1)
    return AdmissionState({**state.classes, traffic_class: updated}), Admission(True)


def release(
    state: AdmissionState, traffic_class: str, now: float, *, latency_s: float, ok: bool = True
) -> AdmissionState:
    """Record that an admitted request finished after ``latency_s`` and adapt the limit."""
    current = state.classes[traffic_class]
    budget = current.budget
    limit = current.limit
    last_decrease = current.last_decrease_at
    if ok and latency_s <= budget.target_latency_s:
        limit = min(budget.max_limit, limit + 1.0 / max(limit, 1.0))
    elif now - last_decrease >= budget.cooldown_s:
        limit = max(budget.min_limit, limit * budget.backoff)
        last_decrease = now
    ewma = (
        latency_s
        if current.latency_ewma_s == 0.0
        else 0.9 * current.latency_ewma_s + 0.1 * latency_s
    )
    updated = ClassState(budget, limit, max(current.in_flight - 1, 0), last_decrease, ewma)
    return AdmissionState({**state.classes, traffic_class: updated})
