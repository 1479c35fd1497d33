"""Adaptive concurrency limits of the API itself, one budget per traffic class (SPEC 5).

A pure state machine: :func:`acquire` decides whether a request of a class may run now (or gets
``503`` + ``Retry-After``), :func:`release` feeds back its latency. Each class has its own limit,
adapted AIMD-style against a latency target *relative to the class's own uncongested latency*,
telling a standing queue from a burst:

- the *baseline* is a slow average of the latencies of requests that ran alone in their class
  (so waited on no other) with no request of the class refused for ``quiet_s`` (one that runs
  alone while others are being turned away shares the server with their refusals: not a
  no-load figure); while the class is never that idle (a sustained overload) the baseline
  drifts up by ``baseline_drift_per_s``, so a lasting slowdown is learned;
- the target is ``tolerance`` x baseline (at least ``latency_floor_s``, at most
  ``target_latency_s``);
- an *interval* lasts ``interval_s`` and at least ``interval_samples`` answers. When most of
  its answers were over the target *and* found the class busy (at least its floor,
  ``min_limit``, in progress), requests are queueing behind each other, not just unlucky (an
  fsync stall or a burst makes a few answers slow; a busy machine makes them slow with the
  class nearly idle, and a smaller limit would not cure that). Busy is counted against the
  floor, not against the limit: a class allowed 32 with 16 in progress, each answered ten times
  slower than alone, is a queue all the same (its requests share one event loop and one
  commit), and the limit must come down to where answers are fast, not wait for the class to
  fill a limit it never needed. The limit is then
  multiplied by ``backoff``, or by target / smoothed latency when that is smaller (never by
  less than a half): multiplicative decrease, deeper the further over the target, so a
  sudden overload is met within a few intervals rather than seconds. (Not the interval's
  fastest answer, as in CoDel: requests here do not leave one by one from a FIFO queue;
  group commit lets a few through fast while most wait);
- an answer within the target adds ``1 / limit`` (about +1 per limit's worth of requests:
  additive increase), but only while the class uses at least half its limit: an idle class
  must not drift to its ceiling and let the next burst in all at once;
- a request that finds the class full while its answers (once there are any) are within the
  target raises the limit by one, at most once per interval: the limit, not the server, is
  what refuses it (after an overload the limit is low and the class mostly idle, so additive
  increase alone would take seconds to let the next ordinary burst through); once per
  interval, so a sudden overload cannot raise it far before its latency shows;
- a failed request (5xx) cuts the limit too, at most once per interval.

So under overload the limit settles where admitted requests run about as fast as uncongested
ones, and the excess is refused before it costs anything but the refusal.

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
#: Weight of the newest uncongested latency in the baseline (about the last 20).
BASELINE_WEIGHT = 0.05
#: One outlier (an fsync stall) moves the baseline at most as much as this many baselines.
BASELINE_OUTLIER = 4.0
#: Weight of the newest latency in the smoothed one (about the last five).
EWMA_WEIGHT = 0.2
#: One cut never takes more than half the limit away.
MAX_CUT = 0.5


@dataclass(frozen=True)
class ClassBudget:
    """Limits and latency targets of one traffic class."""

    initial: float = 32.0
    min_limit: float = 2.0
    max_limit: float = 256.0
    #: Slower than this is always slow, whatever the baseline.
    target_latency_s: float = 0.5
    #: The target is this multiple of the baseline ...
    tolerance: float = 2.0
    #: ... but never below this, so sub-millisecond reads are not throttled by scheduler noise.
    latency_floor_s: float = 0.005
    backoff: float = 0.8
    interval_s: float = 0.1
    interval_samples: int = 8
    baseline_drift_per_s: float = 0.01
    quiet_s: float = 1.0
    #: How long the API holds a refusal of this class before answering it (not used here).
    refusal_hold_s: float = 0.0


@dataclass(frozen=True)
class ClassState:
    """One class now: its limit, requests running, and what its latencies were."""

    budget: ClassBudget
    limit: float
    in_flight: int = 0
    #: The interval being measured: when it began, its answers, how many were slow and how many
    #: found the class busy (at least its floor in progress).
    interval_started_at: float = -math.inf
    interval_answers: int = 0
    interval_slow: int = 0
    interval_busy: int = 0
    last_decrease_at: float = -math.inf
    last_burst_raise_at: float = -math.inf
    last_refusal_at: float = -math.inf
    latency_ewma_s: float = 0.0
    #: Average uncongested latency (0 until the first) and when it last moved.
    baseline_s: float = 0.0
    baseline_at: float = 0.0

    def baseline_estimate(self, now: float) -> float:
        """The uncongested latency now: the baseline, drifted up since it last moved."""
        elapsed = max(0.0, now - self.baseline_at)
        return self.baseline_s * math.exp(self.budget.baseline_drift_per_s * elapsed)

    def target_s(self, now: float) -> float:
        """The latency above which an answer counts as slow."""
        budget = self.budget
        relative = max(budget.tolerance * self.baseline_estimate(now), budget.latency_floor_s)
        return min(budget.target_latency_s, relative)


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
    current = state.classes[traffic_class]
    budget = current.budget
    if (
        current.in_flight + 1 > math.floor(current.limit)
        and current.limit < budget.max_limit
        and 0.0 < current.latency_ewma_s <= current.target_s(now)
        and now - current.last_burst_raise_at >= budget.interval_s
    ):
        raised = min(budget.max_limit, current.limit + 1.0)
        current = replace(current, limit=raised, last_burst_raise_at=now)
        state = AdmissionState({**state.classes, traffic_class: current})
    if current.in_flight + 1 > math.floor(current.limit):
        # Roughly how long until a slot frees: one smoothed latency, at least a second.
        retry = max(1, math.ceil(current.latency_ewma_s))
        refused = replace(current, last_refusal_at=now)
        return AdmissionState({**state.classes, traffic_class: refused}), Admission(False, retry)
    updated = replace(current, in_flight=current.in_flight + 1)
    return AdmissionState({**state.classes, traffic_class: updated}), Admission(True)


def release(
    state: AdmissionState, traffic_class: str, now: float, *, latency_s: float, ok: bool = True
) -> AdmissionState:
    """Record that an admitted request finished after ``latency_s`` and adapt the limit."""
    current = state.classes[traffic_class]
    budget = current.budget
    target = current.target_s(now)
    limit = current.limit
    ewma = (
        latency_s
        if current.latency_ewma_s == 0.0
        else (1 - EWMA_WEIGHT) * current.latency_ewma_s + EWMA_WEIGHT * latency_s
    )
    updated = replace(current, in_flight=max(current.in_flight - 1, 0), latency_ewma_s=ewma)
    if ok:
        updated = replace(
            updated,
            interval_answers=updated.interval_answers + 1,
            interval_slow=updated.interval_slow + (latency_s > target),
            # Busy: at least the floor in progress (a limit cut low by an overload must not
            # make ordinary traffic, fewer than the floor at once, look busy).
            interval_busy=updated.interval_busy + (current.in_flight >= budget.min_limit),
        )
        if current.baseline_s == 0.0:
            updated = replace(updated, baseline_s=latency_s, baseline_at=now)
        elif current.in_flight <= 1 and now - current.last_refusal_at >= budget.quiet_s:
            # It ran alone, nothing refused lately: what a request costs now, no load around.
            baseline = current.baseline_estimate(now)
            sample = min(latency_s, BASELINE_OUTLIER * baseline)
            baseline += BASELINE_WEIGHT * (sample - baseline)
            updated = replace(updated, baseline_s=baseline, baseline_at=now)
    cut = False
    if not math.isfinite(current.interval_started_at):
        updated = replace(updated, interval_started_at=now)
    elif (
        now - current.interval_started_at >= budget.interval_s
        and updated.interval_answers >= budget.interval_samples
    ):
        # Most answers of the interval were slow, with the class busy: a queue is standing.
        answers = updated.interval_answers
        cut = 2 * updated.interval_slow > answers and 2 * updated.interval_busy > answers
        updated = replace(
            updated, interval_started_at=now, interval_answers=0, interval_slow=0, interval_busy=0
        )
    if not ok and now - current.last_decrease_at >= budget.interval_s:
        cut = True
    if cut:
        factor = max(MAX_CUT, min(budget.backoff, target / ewma if ewma > 0 else 1.0))
        limit = max(budget.min_limit, limit * factor)
        updated = replace(updated, last_decrease_at=now)
    elif ok and latency_s <= target and current.in_flight >= limit / 2:
        limit = min(budget.max_limit, limit + 1.0 / max(limit, 1.0))
    return AdmissionState({**state.classes, traffic_class: replace(updated, limit=limit)})
