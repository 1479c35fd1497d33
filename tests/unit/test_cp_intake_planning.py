"""Intake plans with the planner on a real SQLite store: just in time, stock reserved without
oversell (also across two stores on one file, racing threads), released once on cancellation,
restocked by deliveries, low stock alerted once until restocked."""

from __future__ import annotations

import bisect
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from control_plane import catalogue, intake, orders, stock
from control_plane.config import Settings
from control_plane.intake import IntakeAnswer
from control_plane.planning.planner import plan_batch
from control_plane.planning.world import (
    Booking,
    KitchenSpec,
    Occupancy,
    OrderRequest,
    SkuSpec,
    StationSpec,
    TaskPlan,
    World,
)
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate, StockDelivery
from control_plane.store import Store

T0 = 1_800_000_000.0
PREP_S = 300.0
NOMINAL_P90_S = PREP_S * 1.25  # no learned prep times yet: the recipe's nominal p90


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """Kitchen k1 (grill, 64 slots) and SKU burger (one patty and one bun per unit)."""
    instance = Store.open(settings.db_path)
    catalogue.create_kitchen(
        instance,
        KitchenCreate.model_validate(
            {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "G", "slots": 64}]}
        ),
        now=T0,
        actor="test",
    )
    catalogue.create_sku(
        instance,
        SkuCreate.model_validate(
            {
                "id": "burger",
                "name": "Burger",
                "station_id": "grill",
                "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": PREP_S}],
                "freshness_window_min": 30,
                "ingredients": [
                    {"ingredient": "patty", "per_unit": 1},
                    {"ingredient": "bun", "per_unit": 1},
                ],
            }
        ),
        now=T0,
        actor="test",
    )
    try:
        yield instance
    finally:
        instance.close()


def deliver(store: Store, ingredient: str, quantity: float, mark: float | None = None) -> None:
    line: dict[str, Any] = {"ingredient": ingredient, "quantity": quantity}
    if mark is not None:
        line["low_water_mark"] = mark
    stock.deliver(store, "k1", StockDelivery.model_validate({"lines": [line]}), now=T0, actor="ops")


def place(
    store: Store,
    settings: Settings,
    *,
    quantity: int = 1,
    promised_in_s: float = 3 * 3600,
    transport_min: float = 10,
    key: str | None = None,
) -> IntakeAnswer:
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": quantity}],
            "promised_by": datetime.fromtimestamp(T0 + promised_in_s, UTC).isoformat(),
            "destination": "store-1",
            "transport_min": transport_min,
        }
    )
    key = key or str(uuid.uuid4())
    return intake.submit_order(
        store,
        order,
        key=key,
        body_hash=key,
        now=T0,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )


def on_hand(store: Store, ingredient: str) -> float:
    with store.read() as reader:
        row = reader.stock_item("k1", ingredient)
    assert row is not None
    return float(row["quantity"])


def low_stock_alerts(store: Store) -> list[str]:
    with store.read() as reader:
        rows = reader.alerts(kitchen_id="k1", acknowledged=None, limit=100, after_position=0)
    return [str(row["message"]) for row in rows if row["kind"] == stock.LOW_STOCK]


def audit_actions(store: Store, action: str) -> int:
    with store.read() as reader:
        return sum(1 for row in reader.audit_rows() if row["action"] == action)


def test_far_promise_is_planned_just_in_time(store: Store, settings: Settings) -> None:
    """A promise three hours out starts its task as late as the p90 allows, not now."""
    answer = place(store, settings, promised_in_s=3 * 3600, transport_min=10)
    assert answer.status == 201, answer.body
    (task,) = json.loads(answer.body)["tasks"]
    start_after = datetime.fromisoformat(task["start_after"]).timestamp()
    due = T0 + 3 * 3600 - 10 * 60
    assert start_after == pytest.approx(due - NOMINAL_P90_S)
    assert datetime.fromisoformat(task["finish_by"]).timestamp() == pytest.approx(due)
    assert datetime.fromisoformat(task["predicted_ready_at"]).timestamp() == pytest.approx(
        start_after + PREP_S
    )


def test_busy_slots_push_the_next_task_earlier_not_past_the_promise(
    store: Store, settings: Settings
) -> None:
    """With every slot booked at the latest start, the next order starts one p90 earlier."""
    starts = []
    for _ in range(65):
        answer = place(store, settings)
        assert answer.status == 201
        (task,) = json.loads(answer.body)["tasks"]
        starts.append(datetime.fromisoformat(task["start_after"]).timestamp())
    assert len(set(starts[:64])) == 1
    assert starts[64] == pytest.approx(starts[0] - NOMINAL_P90_S)


def test_order_beyond_the_stock_is_rejected_out_of_stock(store: Store, settings: Settings) -> None:
    """Two burgers with one patty left: 422 ``out_of_stock``, nothing taken, recorded."""
    deliver(store, "patty", 1)
    answer = place(store, settings, quantity=2)
    problem = json.loads(answer.body)
    assert (answer.status, problem["reason"]) == (422, "out_of_stock")
    assert on_hand(store, "patty") == 1
    with store.read() as reader:
        order = reader.order(problem["order_id"])
        assert order is not None and order["status"] == "rejected"
        assert reader.stock_reservations_of_order(problem["order_id"]) == []


def test_untracked_ingredients_are_not_limited(store: Store, settings: Settings) -> None:
    """Only patties are tracked: buns (no stock row) never limit an order."""
    deliver(store, "patty", 5)
    assert place(store, settings, quantity=5).status == 201
    assert on_hand(store, "patty") == 0
    with store.read() as reader:
        assert reader.stock_item("k1", "bun") is None


def _race(stores: list[Store], settings: Settings, attempts: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(attempts)

    def one(n: int) -> None:
        start.wait()
        answer = place(stores[n % len(stores)], settings)
        with lock:
            statuses.append(answer.status)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_intake_never_oversells(store: Store, settings: Settings) -> None:
    """32 threads on two stores over one file race for 10 patties: exactly 10 orders are
    accepted, the rest rejected out of stock, and reservations add up to the stock taken."""
    deliver(store, "patty", 10)
    other = Store.open(settings.db_path)
    try:
        statuses = _race([store, other], settings, attempts=32)
    finally:
        other.close()
    assert sorted(statuses) == [201] * 10 + [422] * 22
    assert on_hand(store, "patty") == 0
    with store.read() as reader:
        accepted = reader.orders(status="planned", kitchen_id=None, limit=100, after_position=0)
        reserved = sum(
            row["quantity"]
            for order in accepted
            for row in reader.stock_reservations_of_order(order["id"])
            if row["ingredient"] == "patty"
        )
    assert (len(accepted), reserved) == (10, 10)


def test_cancellation_gives_the_stock_back_exactly_once(store: Store, settings: Settings) -> None:
    """Cancelling returns what the order reserved; cancelling again returns nothing more."""
    deliver(store, "patty", 5)
    order_id = json.loads(place(store, settings, quantity=2).body)["id"]
    assert on_hand(store, "patty") == 3
    orders.cancel_order(store, order_id, reason="customer", now=T0 + 1, actor="ops")
    orders.cancel_order(store, order_id, reason="customer", now=T0 + 2, actor="ops")
    assert on_hand(store, "patty") == 5
    assert audit_actions(store, "stock.released") == 1


def test_low_stock_is_alerted_once_until_restocked(store: Store, settings: Settings) -> None:
    """Falling below the mark raises one alert; further orders below it raise none."""
    deliver(store, "patty", 6, mark=4)
    for _ in range(4):
        assert place(store, settings).status == 201
    assert on_hand(store, "patty") == 2
    assert low_stock_alerts(store) == ["patty at kitchen k1 is low: 3 left, below the mark of 4"]
    assert audit_actions(store, "stock.low") == 1


def test_delivery_restocks_and_rearms_the_low_stock_alert(store: Store, settings: Settings) -> None:
    """A delivery back above the mark clears the alert state (audited), so the next fall
    below the mark alerts again; the delivered stock can be ordered."""
    deliver(store, "patty", 3, mark=3)
    assert place(store, settings, quantity=2).status == 201
    deliver(store, "patty", 10)
    with store.read() as reader:
        row = reader.stock_item("k1", "patty")
    assert row is not None
    assert (row["quantity"], row["low_alerted_at"]) == (11, None)
    assert audit_actions(store, "stock.low_cleared") == 1
    assert audit_actions(store, "stock.delivered") == 2
    assert place(store, settings, quantity=9).status == 201
    assert len(low_stock_alerts(store)) == 2


def test_a_delivery_only_adds_the_mark_when_given(store: Store) -> None:
    """A second delivery without a mark keeps the first one's mark."""
    deliver(store, "patty", 3, mark=2)
    deliver(store, "patty", 1)
    with store.read() as reader:
        view = stock.stock_view(reader, "k1")
    assert view["items"] == [
        {
            "ingredient": "patty",
            "quantity": 4.0,
            "low_water_mark": 2.0,
            "low": False,
            "low_alerted_at": None,
            "updated_at": "2027-01-15T08:00:00.000000+00:00",
        }
    ]


def test_failed_equipment_removes_the_capacity_it_gives(store: Store, settings: Settings) -> None:
    """The only grill of the station has failed: ``equipment_unavailable``, nothing planned."""
    with store.write() as tx:
        tx.upsert_equipment(
            kitchen_id="k1",
            equipment_id="grill-1",
            kind="grill",
            station_id="grill",
            health="failed",
            updated_at=T0,
        )
    answer = place(store, settings)
    assert (answer.status, json.loads(answer.body)["reason"]) == (422, "equipment_unavailable")


def test_batch_size_and_ingredients_read_back_from_the_catalogue(store: Store) -> None:
    """A SKU's ingredients per unit and batch size are stored and shown."""
    with store.read() as reader:
        row = reader.sku("burger")
    assert row is not None
    view = catalogue.sku_view(row)
    assert view["ingredients"] == [
        {"ingredient": "patty", "per_unit": 1.0},
        {"ingredient": "bun", "per_unit": 1.0},
    ]
    assert view["max_batch_units"] == 0


def test_a_short_ingredient_rolls_back_every_decrement_of_the_order(
    store: Store, settings: Settings
) -> None:
    """Reserving buns and patties with too few buns takes neither (all or nothing)."""
    deliver(store, "patty", 5)
    deliver(store, "bun", 1)
    order_id = json.loads(place(store, settings).body)["id"]
    with store.write() as tx, pytest.raises(stock.OutOfStock) as short:
        stock.reserve(
            tx,
            order_id=order_id,
            kitchen_id="k1",
            task_needs={"t-1": {"patty": 2.0, "bun": 2.0}},
            now=T0,
        )
    assert short.value.ingredients == ["bun"]
    assert (on_hand(store, "patty"), on_hand(store, "bun")) == (4, 0)


def _concurrency(intervals: list[tuple[float, float, int]], at: float) -> int:
    return sum(n for start, end, n in intervals if start <= at < end)


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(-3, 20), st.integers(1, 5)).map(
            lambda t: (float(t[0]), float(t[0] + t[1]), t[2])
        ),
        max_size=30,
    )
)
def test_an_occupancy_is_the_concurrency_of_the_booked_tasks(
    intervals: list[tuple[float, float, int]],
) -> None:
    """The step function intake hands the planner has, at every instant, as many slots busy as
    the booked tasks it stands for, and their slot-seconds."""
    occupancy = Occupancy.of(intervals)
    points = sorted({t for start, end, _ in intervals for t in (start, end, (start + end) / 2)})
    for at in points:
        i = bisect.bisect_right(occupancy.times, at) - 1
        busy = occupancy.counts[i] if i >= 0 else 0
        assert busy == _concurrency(intervals, at)
    expected_s = sum(n * (end - start) for start, end, n in intervals if end > start)
    assert abs(occupancy.busy_s() - expected_s) < 1e-6


_SOUP = SkuSpec("soup", station_id="stove", duration_s=600.0, freshness_window_min=60)


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    booked=st.lists(
        st.tuples(
            st.sampled_from(["k1", "k2"]),
            st.integers(0, 7200),
            st.integers(60, 1800),
            st.integers(1, 3),
        ),
        max_size=25,
    ),
    orders=st.lists(
        st.tuples(st.integers(1, 4), st.integers(3600, 9000), st.integers(0, 30)),
        min_size=1,
        max_size=4,
    ),
)
def test_planning_on_an_occupancy_is_planning_on_the_tasks_it_sums(
    booked: list[tuple[str, int, int, int]], orders: list[tuple[int, int, int]]
) -> None:
    """The same placements and rejections as with one booking per task; the same slots as with
    one booking per slot level (what intake passed before), never two overlapping tasks of a
    station in one slot, never past its slots."""
    kitchens = tuple(KitchenSpec(k, "active", (StationSpec("stove", 3),)) for k in ("k1", "k2"))
    requests = [
        OrderRequest((("soup", q),), promised_by=float(p), transport_min=t, order_id=f"o{n}")
        for n, (q, p, t) in enumerate(orders)
    ]
    tasks = [
        Booking(k, "stove", float(start), float(start + length), f"t{n}.{copy}")
        for n, (k, start, length, count) in enumerate(booked)
        for copy in range(count)
    ]
    occupancy = {
        (k, "stove"): Occupancy.of(
            (float(start), float(start + length), count)
            for kk, start, length, count in booked
            if kk == k
        )
        for k in ("k1", "k2")
    }
    by_task = plan_batch(0.0, requests, World(kitchens, {"soup": _SOUP}, tuple(tasks)))
    by_step = plan_batch(0.0, requests, World(kitchens, {"soup": _SOUP}, occupancy=occupancy))
    assert by_step.rejections == by_task.rejections
    assert by_step.orders == by_task.orders

    def placed(plan: TaskPlan) -> tuple[object, ...]:
        return (plan.kitchen_id, plan.planned_start, plan.planned_finish, plan.lines)

    assert [placed(t) for t in by_step.tasks] == [placed(t) for t in by_task.tasks]
    # Slots exactly as when intake passed the step function as one booking per slot level.
    levels = tuple(
        Booking(k, station, start, end)
        for (k, station), steps in occupancy.items()
        for start, end in steps.layers()
    )
    assert (
        by_step.tasks == plan_batch(0.0, requests, World(kitchens, {"soup": _SOUP}, levels)).tasks
    )
    for task in by_step.tasks:
        assert 0 <= task.slot < 3
        for other in by_step.tasks:
            if other is task or other.kitchen_id != task.kitchen_id:
                continue
            if (
                other.planned_start < task.planned_finish
                and task.planned_start < other.planned_finish
            ):
                assert other.slot != task.slot


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    quantities=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    transport=st.one_of(st.integers(0, 20), st.floats(0, 20, allow_nan=False)),
    promised_in_s=st.integers(40 * 60, 6 * 3600),
)
def test_the_201_is_the_order_as_read_back(
    store: Store,
    settings: Settings,
    quantities: list[int],
    transport: float,
    promised_in_s: int,
) -> None:
    """Intake builds the 201 from what it wrote, not by reading it back: it is exactly what
    ``GET /v1/orders/{id}`` shows (tasks in the same order, numbers with the stored types)."""
    deliver(store, "patty", 10_000)
    deliver(store, "bun", 10_000)
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": q} for q in quantities],
            "promised_by": datetime.fromtimestamp(T0 + promised_in_s, UTC).isoformat(),
            "destination": "store-1",
            "transport_min": transport,
        }
    )
    answer = intake.submit_order(
        store,
        order,
        key=str(uuid.uuid4()),
        body_hash="h",
        now=T0,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    assert answer.status == 201, answer.body
    body = json.loads(answer.body)
    with store.read() as reader:
        row = reader.order(body["id"])
        assert row is not None
        read_back = orders.order_view(reader, row)
    # Byte for byte: 5 == 5.0 in Python, not in the JSON a client reads.
    assert answer.body == json.dumps(read_back, separators=(",", ":")).encode()
