"""Predictive SLA: predictions from the queue, alerts before the miss, causes, hysteresis."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.sla import (
    OpenOrder,
    Prediction,
    QueuedTask,
    SlaState,
    evaluate,
    predict,
)
from control_plane.planning.world import KitchenSpec, SkuSpec, StationSpec, World
from tests.fixtures_planning import T0, kitchen

SOUP = SkuSpec("soup", station_id="stove", duration_s=300.0, freshness_window_min=60)
FAST = settings(max_examples=40, deadline=None)


def one_slot(*, last_sync_at: float | None = T0, status: str = "active") -> KitchenSpec:
    return KitchenSpec("k1", status, (StationSpec("stove", 1),), last_sync_at=last_sync_at)


def test_queue_position_sets_the_predicted_ready_time() -> None:
    """Three tasks on one slot are predicted back to back (p50 300 s, p90 375 s)."""
    w = World((one_slot(),), {"soup": SOUP})
    tasks = [QueuedTask(f"t{n}", "k1", "stove", "soup", "planned", T0) for n in range(3)]
    orders = [OpenOrder(f"o{n}", T0 + 7200, 10, 60, (f"t{n}",)) for n in range(3)]
    predictions = predict(T0, orders, tasks, w)
    assert [predictions[f"o{n}"].ready_p50 - T0 for n in range(3)] == [300, 600, 900]
    assert [predictions[f"o{n}"].ready_p90 - T0 for n in range(3)] == [375, 750, 1125]


def test_a_started_task_overdue_past_its_p90_is_not_about_to_finish() -> None:
    """The remaining time of an overdue task grows with how overdue it is."""
    w = World((one_slot(),), {"soup": SOUP})
    order = [OpenOrder("o", T0 + 7200, 10, 60, ("t",))]
    late = predict(T0, order, [QueuedTask("t", "k1", "stove", "soup", "started", 0, T0 - 600)], w)
    later = predict(T0, order, [QueuedTask("t", "k1", "stove", "soup", "started", 0, T0 - 1200)], w)
    assert T0 < late["o"].ready_p90 < later["o"].ready_p90
    assert later["o"].cause == "slow_kitchen"


def test_margin_and_probability_reflect_a_tight_promise() -> None:
    """An order whose p90 lands after the promise has a negative margin and likely misses."""
    w = World((one_slot(),), {"soup": SOUP})
    tasks = [QueuedTask("t", "k1", "stove", "soup", "planned", T0)]
    tight = predict(T0, [OpenOrder("o", T0 + 330 + 600, 10, 60, ("t",))], tasks, w)["o"]
    loose = predict(T0, [OpenOrder("o", T0 + 3600, 10, 60, ("t",))], tasks, w)["o"]
    assert tight.margin_s < 0 < loose.margin_s
    assert tight.miss_probability > 0.1 > loose.miss_probability


def test_causes_name_partitions_and_failed_equipment() -> None:
    """An unreachable kitchen is ``stranded``; a station that lost slots is ``equipment_down``."""
    tasks = [QueuedTask("t", "k1", "grill", "burger", "started", 0, T0 - 60)]
    burger = SkuSpec("burger", station_id="grill", duration_s=300.0, freshness_window_min=30)
    orders = [OpenOrder("o", T0 + 600, 5, 30, ("t",))]
    unreachable = World((kitchen("k1", last_sync_at=T0 - 3600),), {"burger": burger})
    degraded = World((kitchen("k1", equipment_health=("ok", "failed", "ok")),), {"burger": burger})
    assert predict(T0, orders, tasks, unreachable)["o"].cause == "stranded"
    assert predict(T0, orders, tasks, degraded)["o"].cause == "equipment_down"


def _prediction(margin: float) -> dict[str, Prediction]:
    return {"o": Prediction("o", 0.0, 0.0, 0.0, margin, 0.5, "queue")}


def test_alert_is_raised_once_with_lead_time_and_message() -> None:
    """A negative margin raises one alert saying when the order will miss and why."""
    state, events = evaluate(SlaState(), T0, _prediction(-30.0), {"o": T0 + 7 * 60})
    assert [(e.kind, e.lead_s) for e in events] == [("raised", 420.0)]
    assert events[0].message.startswith("order o will miss its SLA in 7 minutes (cause: queue")
    state, again = evaluate(state, T0 + 30, _prediction(-40.0), {"o": T0 + 7 * 60})
    assert again == []


@given(st.lists(st.floats(-100.0, 100.0), min_size=1, max_size=60))
def test_alerts_do_not_flap_when_the_margin_hovers_around_zero(margins: list[float]) -> None:
    """Margins within +-100 s raise at most one alert and never clear it (clear needs +120 s)."""
    state = SlaState()
    kinds = []
    for n, margin in enumerate(margins):
        state, events = evaluate(state, T0 + n * 30, _prediction(margin), {"o": T0 + 10**5})
        kinds += [e.kind for e in events]
    assert kinds.count("raised") <= 1
    assert "cleared" not in kinds


def test_alert_clears_when_the_order_recovers_and_closes_when_it_is_gone() -> None:
    """A margin back above the clear band clears; an order no longer open closes its alert."""
    state, _ = evaluate(SlaState(), T0, _prediction(-10.0), {"o": T0 + 600})
    state, cleared = evaluate(state, T0 + 60, _prediction(200.0), {"o": T0 + 600})
    assert [e.kind for e in cleared] == ["cleared"]
    state, _ = evaluate(state, T0 + 90, _prediction(-10.0), {"o": T0 + 600})
    state, closed = evaluate(state, T0 + 120, {}, {})
    assert [e.kind for e in closed] == ["closed"]
    assert state.active == {}


@dataclass
class _SimTask:
    task_id: str
    order_id: str
    planned_start: float
    actual_s: float
    started_at: float | None = None
    done_at: float | None = None


STEP_S = 30.0
TRANSPORT_MIN = 5.0


def _run_synthetic_queue(
    slowdowns: list[float], slack_s: float
) -> tuple[dict[str, float], dict[str, float]]:
    """One slot, tasks planned back to back at nominal p90; the kitchen actually runs at
    ``slowdown`` x nominal per task. Returns each order's actual lateness and its first alert."""
    w = World((one_slot(),), {"soup": SOUP})
    sims = [
        _SimTask(f"t{n}", f"o{n}", T0 + n * 375.0, 300.0 * slow) for n, slow in enumerate(slowdowns)
    ]
    promised = {s.order_id: s.planned_start + 375.0 + TRANSPORT_MIN * 60 + slack_s for s in sims}
    orders = [
        OpenOrder(s.order_id, promised[s.order_id], TRANSPORT_MIN, 60, (s.task_id,)) for s in sims
    ]
    state = SlaState()
    first_alert: dict[str, float] = {}
    now = T0
    while any(s.done_at is None for s in sims):
        running = next((s for s in sims if s.started_at is not None and s.done_at is None), None)
        if running is not None and running.started_at is not None:
            finishes_at = running.started_at + running.actual_s
            if now >= finishes_at:
                running.done_at = finishes_at
                running = None
        if running is None:
            nxt = next((s for s in sims if s.started_at is None), None)
            if nxt is not None and now >= nxt.planned_start:
                nxt.started_at = now
        queue = [
            QueuedTask(
                s.task_id,
                "k1",
                "stove",
                "soup",
                "started" if s.started_at is not None else "planned",
                s.planned_start,
                s.started_at,
            )
            for s in sims
            if s.done_at is None
        ]
        open_orders = [o for o in orders if any(q.task_id == o.task_ids[0] for q in queue)]
        predictions = predict(now, open_orders, queue, w)
        state, events = evaluate(state, now, predictions, promised)
        for event in events:
            if event.kind == "raised":
                first_alert.setdefault(event.order_id, event.lead_s)
        now += STEP_S
    lateness = {
        s.order_id: (s.done_at or 0.0) + TRANSPORT_MIN * 60 - promised[s.order_id] for s in sims
    }
    return lateness, first_alert


@FAST
@given(st.lists(st.floats(0.8, 2.0), min_size=1, max_size=8), st.floats(0.0, 600.0))
def test_alerts_fire_before_the_miss_with_positive_lead_time(
    slowdowns: list[float], slack_s: float
) -> None:
    """On a synthetic queue of a slow kitchen, every order late by more than one evaluation
    step was alerted before its promise (lead time > 0)."""
    lateness, alerts = _run_synthetic_queue(slowdowns, slack_s)
    for order_id, late_s in lateness.items():
        if late_s > STEP_S:
            assert order_id in alerts
            assert alerts[order_id] > 0


def test_a_uniformly_slow_kitchen_is_flagged_well_ahead() -> None:
    """With every task 1.6x slower, the last orders are alerted more than 10 minutes ahead."""
    lateness, alerts = _run_synthetic_queue([1.6] * 8, 0.0)
    assert lateness["o7"] > 0
    assert alerts["o7"] > 600
