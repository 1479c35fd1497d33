"""Backpressure: levels from signals, hysteresis and dwell, actions, overrides, intake verdicts."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.backpressure import (
    GLOBAL,
    BackpressureSettings,
    BackpressureState,
    Decision,
    Override,
    Signals,
    admit_order,
    fleet_signals,
    kitchen_signals,
    step,
)
from tests.fixtures_planning import kitchen

DWELL = BackpressureSettings().min_dwell_s
FAST = settings(max_examples=80, deadline=None)


def run(loads: list[float], *, every_s: float = 5.0) -> list[Decision]:
    state = BackpressureState()
    out = []
    for n, load in enumerate(loads):
        state, decisions = step(state, n * every_s, {"k1": Signals(load * 1000.0, 1000.0)})
        out.append(decisions["k1"])
    return out


def test_sustained_overload_escalates_one_level_per_step_to_pause() -> None:
    """Queue at 3x capacity walks normal -> throttle -> shed -> pause, one step each."""
    assert [d.level for d in run([3.0] * 4)] == ["throttle", "shed", "pause", "pause"]


def test_recovery_steps_down_only_after_the_dwell_time() -> None:
    """Back to an idle queue, the level drops one step per ``min_dwell_s``, not at once."""
    decisions = run([3.0] * 3 + [0.0] * 60)
    changes = [(n * 5.0, d.level) for n, d in enumerate(decisions) if d.changed]
    downs = [t for t, _ in changes[3:]]
    assert [level for _, level in changes[3:]] == ["shed", "throttle", "normal"]
    assert all(b - a >= DWELL for a, b in itertools.pairwise(downs))


def test_signals_inside_the_hysteresis_band_hold_the_level() -> None:
    """Entered at 130 % load, a load between exit (100 %) and enter (120 %) keeps throttle."""
    decisions = run([1.3] + [1.05, 1.15] * 40)
    assert {d.level for d in decisions} == {"throttle"}


@FAST
@given(
    st.lists(st.floats(0.0, 3.0), min_size=10, max_size=200),
    st.lists(st.floats(0.0, 0.6), min_size=10, max_size=200),
)
def test_noisy_inputs_cause_a_bounded_number_of_transitions_per_dwell_window(
    loads: list[float], risks: list[float]
) -> None:
    """However noisy the signals, in any ``min_dwell_s`` window a scope steps down at most once
    and changes level at most five times (three up from normal, one down, one up again)."""
    state = BackpressureState()
    times = []
    for n, (load, risk) in enumerate(zip(loads, risks, strict=False)):
        now = n * 5.0
        state, decisions = step(state, now, {"k1": Signals(load * 1000, 1000, risk)})
        if decisions["k1"].changed:
            times.append((now, decisions["k1"].level))
    for start, _ in times:
        window = [level for t, level in times if start <= t < start + DWELL]
        assert len(window) <= 5
    levels = ["normal"] + [level for _, level in times]
    order = ["normal", "throttle", "shed", "pause"]
    downs = [
        t
        for (t, level), prev in zip(times, levels, strict=False)
        if order.index(level) < order.index(prev)
    ]
    assert all(b - a >= DWELL for a, b in itertools.pairwise(downs))


def test_each_signal_can_raise_the_level_and_says_why() -> None:
    """At-risk orders, failed capacity and ingestion lag each throttle, named in ``why``."""
    for signals, phrase in [
        (Signals(at_risk_fraction=0.2), "of open orders at risk"),
        (Signals(capacity_lost_fraction=0.5), "of capacity failed"),
        (Signals(ingestion_lag_s=45.0), "ingestion lag 45 s"),
    ]:
        _, decisions = step(BackpressureState(), 0.0, {"k1": signals})
        assert decisions["k1"].level == "throttle"
        assert phrase in decisions["k1"].why


def test_actions_per_level() -> None:
    """Throttle refuses low priority and offers later promises; shed sends 429 + Retry-After;
    pause takes no new work."""
    throttle, shed, pause = run([3.0] * 3)
    assert throttle.actions.reject_priorities == {"low"}
    assert throttle.actions.promise_delay_s > 0
    assert shed.actions.retry_after_s is not None and shed.actions.retry_after_s >= 1
    assert shed.actions.accept_new_work
    assert not pause.actions.accept_new_work


def test_operator_override_pins_the_level_until_it_expires() -> None:
    """An override holds its level whatever the signals, then the controller takes over."""
    override = {"k1": Override("normal", "alice", "event catering", until=100.0)}
    state, decisions = step(BackpressureState(), 0.0, {"k1": Signals(3000, 1000)}, override)
    assert decisions["k1"].level == "normal"
    assert decisions["k1"].why == "operator override by alice: event catering"
    _, decisions = step(state, 100.0, {"k1": Signals(3000, 1000)}, override)
    assert decisions["k1"].level == "throttle"


def _after(steps: int, scope: str, signals: Signals) -> Decision:
    state = BackpressureState()
    decisions: dict[str, Decision] = {}
    for n in range(steps):
        state, decisions = step(state, float(n), {scope: signals})
    return decisions[scope]


def test_global_shed_refuses_every_order_with_retry_after() -> None:
    """Fleet-wide shed answers 429 with a Retry-After whatever the priority."""
    shed = _after(2, GLOBAL, Signals(3000, 1000))
    verdict = admit_order("high", [shed])
    assert (verdict.accept, verdict.status, verdict.reason) == (False, 429, "backpressure_shed")
    assert verdict.retry_after_s is not None and verdict.retry_after_s >= 1


def test_throttle_refuses_low_priority_and_offers_a_later_promise() -> None:
    """Throttled: low priority is refused with a later promise offered; normal is accepted."""
    throttled = _after(1, GLOBAL, Signals(1300, 1000))
    low = admit_order("low", [throttled])
    assert (low.accept, low.reason) == (False, "backpressure_throttle")
    assert low.offered_promise_delay_s > 0
    assert admit_order("normal", [throttled]).accept


def test_one_paused_kitchen_does_not_block_orders_other_kitchens_can_take() -> None:
    """A paused candidate kitchen refuses only when it is the only candidate."""
    paused = _after(3, "k1", Signals(3000, 1000))
    fine = _after(1, "k2", Signals(0, 1000))
    assert paused.level == "pause"
    assert admit_order("normal", [paused, fine]).accept
    alone = admit_order("normal", [paused])
    assert (alone.accept, alone.status) == (False, 429)


def test_retry_after_is_the_time_to_drain_back_under_the_shed_threshold() -> None:
    """Retry-After is the drain time back under the shed exit threshold, capped at 300 s."""
    # Two slots over a 10 min horizon, 170 % loaded: 2040 s of work drains under 135 % (1620 s)
    # in 420 s / 2 slots = 210 s.
    shed = _after(2, "k1", Signals(queue_work_s=2040.0, capacity_s=1200.0, horizon_s=600.0))
    assert shed.level == "shed"
    assert shed.actions.retry_after_s == 210
    swamped = _after(2, "k1", Signals(queue_work_s=3 * 7200.0, capacity_s=7200.0))
    assert swamped.actions.retry_after_s == 300


def test_kitchen_signals_count_failed_equipment_and_inactive_kitchens() -> None:
    """A failed grill removes capacity; a paused kitchen has none at all."""
    degraded = kitchen_signals(
        kitchen("k1", equipment_health=("ok", "failed", "ok")),
        open_work_s=1800.0,
        open_orders=10,
        orders_at_risk=2,
        ingestion_lag_s=5.0,
    )
    paused = kitchen_signals(
        kitchen("k2", status="paused"),
        open_work_s=0.0,
        open_orders=0,
        orders_at_risk=0,
        ingestion_lag_s=0.0,
    )
    # grill 2 slots -> 1 (one of two grills failed), fryer 1, stove 1: 3 of 4 slots.
    assert degraded.capacity_s == 3 * 3600.0
    assert degraded.capacity_lost_fraction == 1 - 3 / 4
    assert degraded.at_risk_fraction == 0.2
    assert paused.capacity_s == 0 and paused.capacity_lost_fraction == 1.0
    fleet = fleet_signals({"k1": degraded, "k2": paused})
    assert fleet.queue_work_s == 1800.0
    assert fleet.capacity_s == degraded.capacity_s


def test_no_work_is_no_load_even_without_capacity() -> None:
    """A kitchen whose equipment has not reported yet (no healthy slot) and has no work stays
    normal on load; the same kitchen with work queued is overloaded."""
    empty = Signals(queue_work_s=0.0, capacity_s=0.0)
    assert empty.load == 0.0
    _, decisions = step(BackpressureState(), 0.0, {"k1": empty})
    assert decisions["k1"].level == "normal"
    assert Signals(queue_work_s=60.0, capacity_s=0.0).load == float("inf")
