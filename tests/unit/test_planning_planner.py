"""The planner (plan_batch): just-in-time slots, capacity, health, freshness, batching, stock."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.planner import PlannerSettings, plan_batch
from control_plane.planning.world import BatchPlan, OrderRequest, SkuSpec, World
from tests.fixtures_planning import SKUS, T0, concurrency_at, kitchen, order, orders_st, worlds

FAST = settings(max_examples=60, deadline=None)


def test_task_starts_as_late_as_its_p90_allows() -> None:
    """A lone order finishes (p90) exactly when it must leave: the shortest possible hold."""
    world = World((kitchen("k1"),), SKUS)
    plan = plan_batch(T0, [order("o1", ("burger", 1), promised_in_s=3600)], world)
    (task,) = plan.tasks
    due = T0 + 3600 - 5 * 60
    assert task.planned_finish == due
    assert task.planned_start == due - 300 * 1.25
    assert task.predicted_ready_at == task.planned_start + 300


def test_same_sku_orders_share_one_batch_when_windows_overlap() -> None:
    """Two burger orders five minutes apart become one batch task of both quantities."""
    world = World((kitchen("k1"),), SKUS)
    orders = [
        order("o1", ("burger", 2), promised_in_s=3600),
        order("o2", ("burger", 3), promised_in_s=3900),
    ]
    plan = plan_batch(T0, orders, world)
    (task,) = plan.tasks
    assert task.quantity == 5
    assert [line.order_id for line in task.lines] == ["o1", "o2"]
    assert {p.task_keys for p in plan.orders} == {(task.task_key,)}


def test_batches_never_exceed_their_unit_limit() -> None:
    """Orders beyond ``max_batch_units`` open a second batch."""
    world = World((kitchen("k1"),), SKUS)
    orders = [order(f"o{n}", ("burger", 4), promised_in_s=3600 + n) for n in range(3)]
    plan = plan_batch(T0, orders, world)
    assert sorted(t.quantity for t in plan.tasks) == [4, 4, 4]


def test_full_slots_push_the_next_task_earlier() -> None:
    """With one stove slot, the second order's stew starts before the first order's.

    (Not fries: with a 5-minute holding limit and one fryer, only one order's fries fit between
    "fast cook still fresh" and "slow cook still on time"; the planner refuses the second.)
    """
    world = World((kitchen("k1", slots=(2, 1, 1)),), SKUS)
    orders = [order(f"o{n}", ("stew", 1), promised_in_s=3600 * 2) for n in range(2)]
    plan = plan_batch(T0, orders, world)
    first, second = sorted(plan.tasks, key=lambda t: t.planned_start)
    assert second.planned_start == first.planned_finish
    assert (first.slot, second.slot) == (0, 0)


def test_a_failed_grill_halves_the_grill_station() -> None:
    """Two grills serve two slots; one failed leaves one slot, so batches cannot overlap."""
    world = World(
        (kitchen("k1", equipment_health=("ok", "failed", "ok")),),
        {**SKUS, "burger": _no_batch("burger")},
    )
    orders = [order(f"o{n}", ("burger", 1), promised_in_s=3600) for n in range(2)]
    plan = plan_batch(T0, orders, world)
    a, b = sorted(plan.tasks, key=lambda t: t.planned_start)
    assert a.planned_finish <= b.planned_start


def test_missing_healthy_equipment_rejects_with_equipment_unavailable() -> None:
    """A kitchen whose only fryer is offline cannot make fries."""
    world = World((kitchen("k1", equipment_health=("ok", "ok", "offline")),), SKUS)
    plan = plan_batch(T0, [order("o1", ("fries", 1))], world)
    assert [(o, r.reason) for o, r in plan.rejections] == [("o1", "equipment_unavailable")]


def test_paused_and_offline_kitchens_get_no_work() -> None:
    """Only the active kitchen is used, whatever the load elsewhere."""
    kitchens = (kitchen("a", status="paused"), kitchen("b", status="offline"), kitchen("c"))
    plan = plan_batch(T0, [order(f"o{n}", ("stew", 1)) for n in range(3)], World(kitchens, SKUS))
    assert {t.kitchen_id for t in plan.tasks} == {"c"}


def test_stock_is_reserved_and_exhaustion_rejects() -> None:
    """Three patties of stock make three burgers; the fourth order is ``stock_insufficient``."""
    world = World((kitchen("k1", stock={"patty": 3.0, "bun": 10.0}),), SKUS)
    orders = [order(f"o{n}", ("burger", 1), promised_in_s=3600 + n * 7200) for n in range(4)]
    plan = plan_batch(T0, orders, world)
    assert [p.reservations for p in plan.orders] == [(("bun", 1.0), ("patty", 1.0))] * 3
    assert [(o, r.reason) for o, r in plan.rejections] == [("o3", "stock_insufficient")]


def test_fries_are_not_made_before_their_holding_limit_allows() -> None:
    """Fries (5 min hold) are predicted ready no earlier than promise - transport - 5 min."""
    world = World((kitchen("k1"),), SKUS)
    plan = plan_batch(T0, [order("o1", ("fries", 1), transport_min=3)], world)
    (task,) = plan.tasks
    assert task.fresh_from == T0 + 3600 - 8 * 60
    assert task.predicted_ready_at >= task.fresh_from


def test_a_fast_cook_is_still_fresh() -> None:
    """The early side of the window holds for a cook as far below the p50 as the p90 is above:
    fries that come out early must not wait past their holding limit."""
    world = World((kitchen("k1"),), {**SKUS, "fries": _no_batch("fries")})
    orders = [order(f"o{n}", ("fries", 1), transport_min=3) for n in range(2)]
    plan = plan_batch(T0, orders, world)
    assert plan.tasks  # one fryer slot: the second order's fries could only be made too early
    for task in plan.tasks:
        p50 = task.predicted_ready_at - task.planned_start
        p90 = task.planned_finish - task.planned_start
        assert task.planned_start + (p50 - (p90 - p50)) >= task.fresh_from


def test_impossible_orders_are_rejected_with_the_deepest_reason() -> None:
    """Too-far transport is ``freshness_infeasible``; no slot in time is ``deadline_infeasible``."""
    world = World((kitchen("k1"),), SKUS)
    far = order("far", ("fries", 1), transport_min=15)
    soon = order("soon", ("stew", 1), promised_in_s=600)
    unknown = order("unknown", ("caviar", 1))
    reasons = dict((o, r.reason) for o, r in plan_batch(T0, [far, soon, unknown], world).rejections)
    assert reasons == {
        "far": "freshness_infeasible",
        "soon": "deadline_infeasible",
        "unknown": "sku_unknown",
    }


def test_high_priority_orders_get_scarce_capacity_first() -> None:
    """With room for one stew, the high-priority order gets it even when listed last."""
    world = World((kitchen("k1", slots=(1, 1, 1)),), SKUS)
    orders = [
        order("o1", ("stew", 1), promised_in_s=2400, priority="low"),
        order("o2", ("stew", 1), promised_in_s=2400, priority="high"),
    ]
    plan = plan_batch(T0, orders, world)
    assert [p.order_id for p in plan.orders] == ["o2"]


def test_only_kitchens_that_reach_the_destination_are_used() -> None:
    """``transport_min_by_kitchen`` limits candidates and sets each kitchen's transport."""
    world = World((kitchen("k1"), kitchen("k2")), SKUS)
    plan = plan_batch(T0, [order("o1", ("stew", 1), transport_by_kitchen={"k2": 12})], world)
    (task,) = plan.tasks
    assert task.kitchen_id == "k2"
    assert task.finish_by == T0 + 3600 - 12 * 60


def test_baseline_settings_plan_as_early_as_possible() -> None:
    """``asap`` starts now at the first feasible kitchen (the naive baseline)."""
    world = World((kitchen("k1"),), SKUS)
    plan = plan_batch(T0, [order("o1", ("stew", 1))], world, PlannerSettings(asap=True))
    assert plan.tasks[0].planned_start == T0


def _no_batch(sku_id: str) -> SkuSpec:
    return replace(SKUS[sku_id], max_batch_units=0)


def _check_invariants(
    now: float, orders: list[OrderRequest], world: World, plan: BatchPlan
) -> None:
    kitchens = {k.kitchen_id: k for k in world.kitchens}
    by_id = {o.order_id: o for o in orders}
    assert sorted([p.order_id for p in plan.orders] + [o for o, _ in plan.rejections]) == sorted(
        by_id
    )
    for task in plan.tasks:
        k = kitchens[task.kitchen_id]
        sku = SKUS[task.sku_id]
        assert k.status == "active"
        assert k.effective_slots(task.station_id) > 0
        assert k.has_healthy(sku.equipment_kinds)
        assert now <= task.planned_start < task.planned_finish
        if len(task.lines) > 1:
            assert task.quantity <= sku.max_batch_units
        for line in task.lines:
            o = by_id[line.order_id]
            transport_s = o.transport_s(task.kitchen_id)
            assert transport_s is not None
            hold_s = float("inf") if sku.max_hold_min is None else sku.max_hold_min * 60
            assert task.planned_finish <= o.promised_by - transport_s + 1e-6
            fresh = o.promised_by - min(sku.freshness_window_min * 60, transport_s + hold_s)
            assert task.predicted_ready_at >= fresh - 1e-6
    stations = {(t.kitchen_id, t.station_id) for t in plan.tasks}
    for kitchen_id, station_id in stations:
        slots = kitchens[kitchen_id].effective_slots(station_id)
        intervals = [
            (t.planned_start, t.planned_finish)
            for t in plan.tasks
            if (t.kitchen_id, t.station_id) == (kitchen_id, station_id)
        ]
        intervals += [
            (b.start, b.end)
            for b in world.bookings
            if (b.kitchen_id, b.station_id) == (kitchen_id, station_id)
        ]
        for task in plan.tasks:
            if (task.kitchen_id, task.station_id) != (kitchen_id, station_id):
                continue
            instants = {task.planned_start} | {
                s for s, _ in intervals if task.planned_start <= s < task.planned_finish
            }
            assert all(concurrency_at(intervals, i) <= slots for i in instants)
    for k in world.kitchens:
        if k.stock is None:
            continue
        for ingredient, available in k.stock.items():
            used = sum(
                dict(p.reservations).get(ingredient, 0.0)
                for p in plan.orders
                if p.kitchen_id == k.kitchen_id
            )
            assert used <= available + 1e-6


@FAST
@given(worlds(), orders_st)
def test_plans_respect_slots_health_status_freshness_and_stock(
    world: World, orders: list[OrderRequest]
) -> None:
    """Whatever the input: no station over its slots, no paused/offline kitchen or failed
    equipment, no finish after the deadline or ready before the freshness window, no oversell."""
    _check_invariants(T0, orders, world, plan_batch(T0, orders, world))


@FAST
@given(worlds(), orders_st)
def test_baseline_settings_keep_the_same_invariants(
    world: World, orders: list[OrderRequest]
) -> None:
    """The ASAP/nearest-first baseline obeys the same hard constraints."""
    baseline = PlannerSettings(asap=True, nearest_first=True, batching=False)
    _check_invariants(T0, orders, world, plan_batch(T0, orders, world, baseline))


@FAST
@given(worlds(), orders_st, st.randoms(use_true_random=False))
def test_planning_is_deterministic_whatever_the_input_order(
    world: World, orders: list[OrderRequest], rnd: random.Random
) -> None:
    """The same orders and kitchens, in any order, give the same plan."""
    shuffled_orders = list(orders)
    rnd.shuffle(shuffled_orders)
    kitchens = list(world.kitchens)
    rnd.shuffle(kitchens)
    bookings = list(world.bookings)
    rnd.shuffle(bookings)
    shuffled = World(tuple(kitchens), world.skus, tuple(bookings))
    first = plan_batch(T0, orders, world)
    assert first == plan_batch(T0, orders, world)
    again = plan_batch(T0, shuffled_orders, shuffled)
    assert {t.task_key: t for t in first.tasks} == {t.task_key: t for t in again.tasks}
    assert sorted(first.rejections) == sorted(again.rejections)
