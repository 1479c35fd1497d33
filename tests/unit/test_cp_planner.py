"""The thin-slice planner: rejection reasons, kitchen choice, and invariants (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from control_plane.planning.planner import (
    KitchenLoad,
    OrderRequest,
    Plan,
    Rejection,
    SkuSpec,
    StationLoad,
    plan_order,
)

NOW = 1_000_000.0
SKUS = {
    "burger": SkuSpec("burger", station_id="grill", duration_s=300, freshness_window_min=30),
    "fries": SkuSpec("fries", station_id="fryer", duration_s=180, freshness_window_min=10),
}


def kitchen(kitchen_id: str, *, status: str = "active", open_work_s: float = 0.0) -> KitchenLoad:
    return KitchenLoad(
        kitchen_id,
        status,
        (StationLoad("grill", 2, open_work_s), StationLoad("fryer", 1, 0.0)),
    )


def order(
    *items: tuple[str, int], promised_in_s: float = 3600, transport_min: float = 5
) -> OrderRequest:
    return OrderRequest(tuple(items), promised_by=NOW + promised_in_s, transport_min=transport_min)


def test_feasible_order_gets_a_plan_with_one_task_per_item() -> None:
    """Each item becomes a task starting now and due by promise minus transport."""
    plan = plan_order(NOW, order(("burger", 2), ("fries", 1)), [kitchen("k1")], SKUS)
    assert isinstance(plan, Plan)
    assert [(t.sku_id, t.station_id) for t in plan.tasks] == [
        ("burger", "grill"),
        ("fries", "fryer"),
    ]
    assert {t.start_after for t in plan.tasks} == {NOW}
    assert {t.finish_by for t in plan.tasks} == {NOW + 3600 - 300}
    assert plan.predicted_ready_at == NOW + 300


def test_unknown_sku_is_rejected_first() -> None:
    """An unknown SKU is ``sku_unknown`` even when other checks would also fail."""
    result = plan_order(NOW, order(("caviar", 1), promised_in_s=1), [], SKUS)
    assert isinstance(result, Rejection)
    assert result.reason == "sku_unknown"


def test_transport_beyond_freshness_window_is_infeasible() -> None:
    """Transport longer than the SKU's freshness window is ``freshness_infeasible``."""
    result = plan_order(NOW, order(("fries", 1), transport_min=11), [kitchen("k1")], SKUS)
    assert isinstance(result, Rejection)
    assert result.reason == "freshness_infeasible"


def test_only_inactive_kitchens_means_not_offered() -> None:
    """Paused and offline kitchens are never chosen."""
    kitchens = [kitchen("k1", status="paused"), kitchen("k2", status="offline")]
    result = plan_order(NOW, order(("burger", 1)), kitchens, SKUS)
    assert isinstance(result, Rejection)
    assert result.reason == "sku_not_offered"


def test_queue_wait_counts_against_the_deadline() -> None:
    """Open work on the station delays the predicted ready time past a tight promise."""
    busy = kitchen("k1", open_work_s=2 * 3600)
    result = plan_order(NOW, order(("burger", 1), promised_in_s=1800), [busy], SKUS)
    assert isinstance(result, Rejection)
    assert result.reason == "deadline_infeasible"


def test_least_loaded_kitchen_wins_and_ties_break_by_id() -> None:
    """The kitchen with the least open work per slot gets the order; equal loads go by id."""
    loaded = plan_order(
        NOW, order(("burger", 1)), [kitchen("a", open_work_s=600), kitchen("b")], SKUS
    )
    tied = plan_order(NOW, order(("burger", 1)), [kitchen("b"), kitchen("a")], SKUS)
    assert isinstance(loaded, Plan) and loaded.kitchen_id == "b"
    assert isinstance(tied, Plan) and tied.kitchen_id == "a"


def test_items_share_station_slots() -> None:
    """Three grill items on two slots: the third waits for the first slot to free up."""
    plan = plan_order(
        NOW, order(("burger", 1), ("burger", 1), ("burger", 1)), [kitchen("k1")], SKUS
    )
    assert isinstance(plan, Plan)
    assert [t.predicted_ready_at - NOW for t in plan.tasks] == [300, 300, 600]


kitchens_strategy = st.lists(
    st.builds(
        kitchen,
        st.sampled_from(["k1", "k2", "k3", "k4"]),
        status=st.sampled_from(["active", "paused", "offline"]),
        open_work_s=st.floats(min_value=0, max_value=20_000),
    ),
    max_size=4,
    unique_by=lambda k: k.kitchen_id,
)
orders_strategy = st.builds(
    lambda items, **kwargs: order(*items, **kwargs),
    st.lists(
        st.tuples(st.sampled_from(["burger", "fries", "caviar"]), st.integers(1, 5)),
        min_size=1,
        max_size=4,
    ),
    promised_in_s=st.floats(min_value=-600, max_value=20_000),
    transport_min=st.floats(min_value=0, max_value=40),
)


@given(kitchens_strategy, orders_strategy)
def test_accepted_plans_use_active_kitchens_and_meet_the_deadline(
    kitchens: list[KitchenLoad], request: OrderRequest
) -> None:
    """Whatever the input, a plan never uses an inactive kitchen or finishes after the deadline."""
    result = plan_order(NOW, request, kitchens, SKUS)
    if isinstance(result, Rejection):
        assert result.reason in {
            "sku_unknown",
            "sku_not_offered",
            "deadline_infeasible",
            "freshness_infeasible",
        }
        return
    chosen = next(k for k in kitchens if k.kitchen_id == result.kitchen_id)
    deadline = request.promised_by - request.transport_min * 60
    assert chosen.status == "active"
    assert result.predicted_ready_at <= deadline
    assert all(
        NOW <= t.predicted_start_at < t.predicted_ready_at <= t.finish_by for t in result.tasks
    )
    assert len(result.tasks) == len(request.items)


@given(kitchens_strategy, orders_strategy)
def test_planning_is_deterministic_whatever_the_kitchen_order(
    kitchens: list[KitchenLoad], request: OrderRequest
) -> None:
    """The same inputs in any order give the same decision."""
    assert plan_order(NOW, request, kitchens, SKUS) == plan_order(
        NOW, request, list(reversed(kitchens)), SKUS
    )
