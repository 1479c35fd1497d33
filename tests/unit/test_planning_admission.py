"""Adaptive concurrency limits of the API: AIMD per traffic class, separate budgets."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.admission import (
    DEFAULT_CLASSES,
    AdmissionState,
    ClassBudget,
    acquire,
    release,
)

FAST = settings(max_examples=80, deadline=None)


def fresh(initial: float = 8.0) -> AdmissionState:
    return AdmissionState.of({name: ClassBudget(initial=initial) for name in DEFAULT_CLASSES})


def test_requests_beyond_the_limit_get_503_retry_after() -> None:
    """At its limit a class refuses with a Retry-After of at least one second."""
    state = fresh(initial=2)
    decisions = []
    for _ in range(3):
        state, decision = acquire(state, "intake", 0.0)
        decisions.append(decision)
    assert [d.admitted for d in decisions] == [True, True, False]
    assert decisions[2].retry_after_s is not None and decisions[2].retry_after_s >= 1


def test_fast_responses_raise_the_limit_additively() -> None:
    """Requests within the latency target grow the limit by about one per limit's worth."""
    state = fresh(initial=8)
    for n in range(80):
        state, _ = acquire(state, "intake", float(n))
        state = release(state, "intake", float(n), latency_s=0.01)
    assert 13 <= state.classes["intake"].limit <= 18


def test_slow_responses_cut_the_limit_down_to_its_floor() -> None:
    """Sustained slow responses shrink the limit multiplicatively, never below the minimum."""
    state = fresh(initial=64)
    for n in range(100):
        state, _ = acquire(state, "intake", float(n))
        state = release(state, "intake", float(n), latency_s=1.0)
    assert state.classes["intake"].limit == ClassBudget().min_limit


def test_a_burst_of_slow_responses_counts_once_per_cooldown() -> None:
    """Ten slow completions within one cooldown cut the limit once."""
    state = fresh(initial=10)
    for _ in range(10):
        state, _ = acquire(state, "intake", 0.0)
    for _ in range(10):
        state = release(state, "intake", 0.5, latency_s=1.0)
    assert state.classes["intake"].limit == 10 * ClassBudget().backoff


def test_a_saturated_class_does_not_starve_the_others() -> None:
    """Agent syncs at their limit leave intake and operator reads fully admitted."""
    state = fresh(initial=4)
    for _ in range(10):
        state, _ = acquire(state, "agent_sync", 0.0)
    for name in ("intake", "operator_read"):
        for _ in range(4):
            state, decision = acquire(state, name, 0.0)
            assert decision.admitted


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DEFAULT_CLASSES), st.booleans(), st.floats(0.0, 2.0), st.booleans()
        ),
        max_size=300,
    )
)
def test_in_flight_never_exceeds_the_limit(ops: list[tuple[str, bool, float, bool]]) -> None:
    """Whatever the sequence of requests and latencies, a request is admitted only while its
    class runs fewer than its limit, counters stay exact, and limits stay within bounds."""
    state = fresh()
    running = dict.fromkeys(DEFAULT_CLASSES, 0)
    for n, (name, arrive, latency, ok) in enumerate(ops):
        now = n * 0.1
        if arrive or running[name] == 0:
            state, decision = acquire(state, name, now)
            running[name] += decision.admitted
            if decision.admitted:
                assert state.classes[name].in_flight <= math.floor(state.classes[name].limit)
        else:
            state = release(state, name, now, latency_s=latency, ok=ok)
            running[name] -= 1
        current = state.classes[name]
        budget = current.budget
        assert current.in_flight == running[name]
        assert budget.min_limit <= current.limit <= budget.max_limit
