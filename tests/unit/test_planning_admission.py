"""Adaptive concurrency limits of the API: AIMD against the no-load latency per traffic class,
separate budgets."""

from __future__ import annotations

import math

import pytest
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


def busy(state: AdmissionState, name: str, now: float, *, latency_s: float) -> AdmissionState:
    """Run the class at its limit once over: admit as many as it takes, finish them all."""
    admitted = 0
    while True:
        state, decision = acquire(state, name, now)
        if not decision.admitted:
            break
        admitted += 1
    for _ in range(admitted):
        state = release(state, name, now, latency_s=latency_s)
    return state


def steady(
    state: AdmissionState, *, start: float, seconds: float, latency_s: float, backlog: int = 0
) -> AdmissionState:
    """Intake requests finishing one every 10 ms, each ``latency_s`` long, for ``seconds``,
    while ``backlog`` more are admitted and left in progress (so the class is congested)."""
    for _ in range(backlog):
        state, _ = acquire(state, "intake", start)
    for n in range(round(seconds / 0.01)):
        now = start + n * 0.01
        state, decision = acquire(state, "intake", now)
        if decision.admitted:
            state = release(state, "intake", now, latency_s=latency_s)
    return state


def test_fast_responses_under_load_raise_the_limit_additively() -> None:
    """Requests within the target, while the class is at least half busy, grow the limit by
    1 / limit each: under one per round of a limit's worth of requests."""
    state = fresh(initial=8)
    for n in range(6):
        state = busy(state, "intake", n * 0.01, latency_s=0.004)
    assert 10 <= state.classes["intake"].limit < 8 + 6


def test_an_idle_class_does_not_drift_to_its_ceiling() -> None:
    """One request at a time, however fast, leaves the limit where it was: the next burst
    must not all be let in at once."""
    state = steady(fresh(initial=8), start=0.0, seconds=2.0, latency_s=0.004)
    assert state.classes["intake"].limit == 8


def test_a_standing_queue_cuts_the_limit_once_per_interval() -> None:
    """When most answers of an interval took over tolerance x baseline while the class was
    congested, the limit is multiplied by the backoff once per interval (not once per slow
    answer)."""
    budget = ClassBudget()
    state = steady(fresh(initial=64), start=0.0, seconds=1.0, latency_s=0.004)
    assert state.classes["intake"].limit == 64
    # Just over the target (tolerance x 4 ms): the gentle backoff.
    just_over = budget.tolerance * 0.004 * 1.1
    state = steady(state, start=1.0, seconds=0.35, latency_s=just_over, backlog=33)
    # 35 slow answers over 0.35 s: the interval open at the start also saw fast answers, then
    # two or three more closed with only slow ones, so two or three cuts.
    limit = state.classes["intake"].limit
    assert 64 * budget.backoff**3 * 0.999 <= limit <= 64 * budget.backoff**2 * 1.001


def test_far_over_the_target_the_limit_halves_per_interval() -> None:
    """Answers ten times the baseline cut deeper than the backoff: by half, never more."""
    state = steady(fresh(initial=64), start=0.0, seconds=1.0, latency_s=0.004)
    state = steady(state, start=1.0, seconds=0.25, latency_s=0.040, backlog=33)
    assert state.classes["intake"].limit == 32


def test_slow_answers_with_the_class_nearly_idle_do_not_cut_the_limit() -> None:
    """A slow machine, not a queue: one request at a time, however slow, leaves the limit be
    (a smaller one would not make it faster)."""
    state = steady(fresh(initial=64), start=0.0, seconds=1.0, latency_s=0.004)
    state = steady(state, start=1.0, seconds=1.0, latency_s=0.040)
    assert state.classes["intake"].limit == 64


def test_a_few_slow_answers_in_an_interval_are_not_a_queue() -> None:
    """A third of the answers slow (fsync stalls, a burst) does not cut the limit: only an
    interval where most answers are slow shows a standing queue."""
    state = steady(fresh(initial=64), start=0.0, seconds=1.0, latency_s=0.004)
    for _ in range(33):
        state, _ = acquire(state, "intake", 1.0)
    for n in range(100):
        now = 1.0 + n * 0.01
        state, _ = acquire(state, "intake", now)
        state = release(state, "intake", now, latency_s=0.2 if n % 3 == 0 else 0.004)
    assert state.classes["intake"].limit >= 64


def test_a_low_limit_does_not_make_ordinary_traffic_look_busy() -> None:
    """With the limit cut near its floor by an overload, three requests in progress (under the
    floor of four) are not a queue the limit could cure: slow answers then leave it be."""
    budget = ClassBudget(initial=6, min_limit=4)
    state = AdmissionState.of({"intake": budget})
    state = steady(state, start=0.0, seconds=1.0, latency_s=0.004)
    state = steady(state, start=1.0, seconds=1.0, latency_s=0.040, backlog=2)
    assert state.classes["intake"].limit >= 6


def test_answers_over_the_absolute_target_cut_the_limit_down_to_its_floor() -> None:
    """Answers slower than target_latency_s, with the class full, are slow whatever the
    baseline: the limit falls to its floor within seconds, never below."""
    state = fresh(initial=64)
    for n in range(40):
        state = busy(state, "intake", n * 0.2, latency_s=1.0)
    assert state.classes["intake"].limit == ClassBudget().min_limit


def test_a_burst_meeting_a_fast_class_raises_its_limit_once_per_interval() -> None:
    """A request refused while the class answers within its target raises the limit by one
    and gets in; a second refusal within the same interval does not raise it again."""
    state = steady(fresh(initial=2), start=0.0, seconds=0.5, latency_s=0.004)
    before = state.classes["intake"].limit
    room = math.floor(before)
    decisions = []
    for _ in range(room + 2):
        state, decision = acquire(state, "intake", 1.0)
        decisions.append(decision.admitted)
    assert decisions == [True] * (room + 1) + [False]
    assert state.classes["intake"].limit == before + 1
    state, decision = acquire(state, "intake", 1.0 + ClassBudget().interval_s)
    assert decision.admitted
    assert state.classes["intake"].limit == before + 2


def test_a_burst_meeting_a_slow_class_is_refused() -> None:
    """While the class answers over its target, a full class refuses and keeps its limit."""
    state = fresh(initial=2)
    for _ in range(2):
        state, _ = acquire(state, "intake", 0.0)
    state = release(state, "intake", 0.5, latency_s=0.004)
    state = release(state, "intake", 0.5, latency_s=0.4)  # the smoothed latency is now slow
    before = state.classes["intake"].limit
    for _ in range(math.floor(before) + 1):
        state, decision = acquire(state, "intake", 1.0)
    assert not decision.admitted
    assert state.classes["intake"].limit == before


def test_failures_cut_the_limit_once_per_interval() -> None:
    """Ten failed requests within one interval cut the limit once."""
    state = fresh(initial=10)
    for _ in range(10):
        state, _ = acquire(state, "intake", 0.0)
    for _ in range(10):
        state = release(state, "intake", 0.05, latency_s=0.001, ok=False)
    assert state.classes["intake"].limit == 10 * ClassBudget().backoff


def test_the_target_follows_the_uncongested_latency() -> None:
    """The target is tolerance x the uncongested latency, at least the floor, at most the
    absolute target."""
    budget = ClassBudget()
    state = steady(fresh(), start=0.0, seconds=0.2, latency_s=0.010)
    target = state.classes["intake"].target_s(0.19)
    assert target == pytest.approx(budget.tolerance * 0.010, rel=0.01)
    state = steady(fresh(), start=0.0, seconds=0.2, latency_s=0.0001)
    assert state.classes["intake"].target_s(0.19) == budget.latency_floor_s
    state = steady(fresh(), start=0.0, seconds=0.2, latency_s=2.0)
    assert state.classes["intake"].target_s(0.19) == budget.target_latency_s


def test_congested_answers_do_not_teach_the_baseline() -> None:
    """Answers that waited behind a full class say nothing about what a request costs: the
    baseline stays where uncongested answers put it."""
    state = steady(fresh(initial=64), start=0.0, seconds=1.0, latency_s=0.004)
    state = steady(state, start=1.0, seconds=0.2, latency_s=0.030, backlog=33)
    assert state.classes["intake"].baseline_s == pytest.approx(0.004, rel=0.01)


def test_answers_while_the_class_refuses_do_not_teach_the_baseline() -> None:
    """A request that ran alone while others of its class were being refused shared the
    server with their refusals: the baseline stays where quiet answers put it."""
    state = steady(fresh(initial=2), start=0.0, seconds=1.0, latency_s=0.004)
    for n in range(50):
        now = 1.0 + n * 0.01
        admitted = 0
        while True:  # a burst: admitted until the class is full, then one refused
            state, decision = acquire(state, "intake", now)
            if not decision.admitted:
                break
            admitted += 1
        for _ in range(admitted):  # the last of them finishes alone
            state = release(state, "intake", now, latency_s=0.030)
    assert state.classes["intake"].baseline_s == pytest.approx(0.004, rel=0.01)


def test_a_lasting_slowdown_is_learned() -> None:
    """When every request becomes slower for good (a bigger database), even with the class
    congested, the baseline drifts up until the new latency is within the target and the
    cuts stop."""
    state = steady(fresh(initial=64), start=0.0, seconds=1.0, latency_s=0.004)
    state = steady(state, start=1.0, seconds=120.0, latency_s=0.012, backlog=2)
    limit = state.classes["intake"].limit
    state = steady(state, start=121.0, seconds=5.0, latency_s=0.012, backlog=2)
    assert state.classes["intake"].target_s(126.0) >= 0.012
    assert state.classes["intake"].limit >= limit  # no more cuts (growing back is allowed)


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


def test_a_queue_well_under_the_limit_still_cuts_it() -> None:
    """Twelve requests in progress against a limit of 32, each ten times slower than alone:
    they are waiting on each other, so the limit comes down to where answers are fast rather
    than waiting for the class to fill a limit it never needed."""
    budget = ClassBudget(initial=32, min_limit=4)
    state = AdmissionState.of({"intake": budget})
    state = steady(state, start=0.0, seconds=1.0, latency_s=0.004)
    state = steady(state, start=1.0, seconds=1.0, latency_s=0.040, backlog=11)
    # Halved per interval until the eleven left in progress fill it (no answers after that).
    assert state.classes["intake"].limit <= 12
