"""Fixtures of the planning tests (registered in tests/conftest.py): worlds, orders, strategies."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import strategies as st

from control_plane.planning.world import (
    Booking,
    EquipmentUnit,
    KitchenSpec,
    OrderRequest,
    SkuSpec,
    StationSpec,
    World,
)

T0 = 1_700_000_000.0
SKUS: dict[str, SkuSpec] = {
    "burger": SkuSpec(
        "burger",
        station_id="grill",
        duration_s=300.0,
        freshness_window_min=30,
        equipment_kinds=frozenset({"grill"}),
        max_batch_units=6,
        ingredients=(("patty", 1.0), ("bun", 1.0)),
    ),
    "fries": SkuSpec(
        "fries",
        station_id="fryer",
        duration_s=180.0,
        freshness_window_min=10,
        max_hold_min=5,
        equipment_kinds=frozenset({"fryer"}),
        max_batch_units=4,
        ingredients=(("potato", 0.3),),
    ),
    "stew": SkuSpec(
        "stew",
        station_id="stove",
        duration_s=1200.0,
        freshness_window_min=60,
        priority="low",
    ),
}


def kitchen(
    kitchen_id: str,
    *,
    status: str = "active",
    slots: tuple[int, int, int] = (2, 1, 1),
    equipment_health: Iterable[str] | None = None,
    stock: dict[str, float] | None = None,
    last_sync_at: float | None = T0,
    outbox_depth: int = 0,
) -> KitchenSpec:
    """A kitchen with a grill (two grills), a fryer (one fryer) and a stove (no equipment)."""
    equipment = None
    if equipment_health is not None:
        grill_a, grill_b, fryer = equipment_health
        equipment = (
            EquipmentUnit(f"{kitchen_id}-grill-a", "grill", "grill", grill_a),
            EquipmentUnit(f"{kitchen_id}-grill-b", "grill", "grill", grill_b),
            EquipmentUnit(f"{kitchen_id}-fryer", "fryer", "fryer", fryer),
        )
    return KitchenSpec(
        kitchen_id,
        status,
        (
            StationSpec("grill", slots[0]),
            StationSpec("fryer", slots[1]),
            StationSpec("stove", slots[2]),
        ),
        equipment,
        stock,
        last_sync_at,
        outbox_depth,
    )


def order(
    order_id: str,
    *items: tuple[str, int],
    promised_in_s: float = 3600.0,
    transport_min: float = 5.0,
    priority: str = "normal",
    transport_by_kitchen: dict[str, float] | None = None,
) -> OrderRequest:
    return OrderRequest(
        tuple(items),
        promised_by=T0 + promised_in_s,
        transport_min=transport_min,
        order_id=order_id,
        priority=priority,
        transport_min_by_kitchen=transport_by_kitchen,
    )


# Mostly known SKUs, sometimes an unknown one.
SKU_CHOICES = ["burger", "burger", "fries", "stew"] * 4 + ["caviar"]
HEALTH = st.sampled_from(["ok", "ok", "degraded", "failed", "offline"])

kitchens_st = st.lists(
    st.builds(
        kitchen,
        st.sampled_from(["k1", "k2", "k3", "k4"]),
        status=st.sampled_from(["active", "active", "active", "paused", "offline"]),
        slots=st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 2)),
        equipment_health=st.none() | st.tuples(HEALTH, HEALTH, HEALTH),
        stock=st.none()
        | st.none()
        | st.fixed_dictionaries(
            {
                "patty": st.floats(0, 20),
                "bun": st.floats(0, 20),
                "potato": st.floats(0, 5),
            }
        ),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda k: k.kitchen_id,
)

orders_st = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.sampled_from(SKU_CHOICES), st.integers(1, 4)),
            min_size=1,
            max_size=2,
        ),
        st.floats(min_value=0, max_value=3 * 3600),
        st.floats(min_value=0, max_value=20),
        st.sampled_from(["low", "normal", "high"]),
        st.sampled_from([None, None, None, {"k1": 2.0, "k2": 9.0}, {"k3": 4.0, "k4": 1.0}]),
    ).map(
        lambda spec: (spec[0], spec[1], spec[2], spec[3], spec[4]),
    ),
    min_size=1,
    max_size=25,
).map(
    lambda specs: [
        order(
            f"o{n:03d}",
            *items,
            promised_in_s=promised,
            transport_min=transport,
            priority=priority,
            transport_by_kitchen=by_kitchen,
        )
        for n, (items, promised, transport, priority, by_kitchen) in enumerate(specs)
    ]
)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """Kitchens with random status, capacity, equipment health and stock, plus committed work
    that fits the stations' nominal slots (one sequence of bookings per slot)."""
    kitchens = tuple(draw(kitchens_st))
    bookings = []
    for k in kitchens:
        for station in k.stations:
            for slot in range(station.slots):
                at = T0 + draw(st.floats(0, 1800))
                for n in range(draw(st.integers(0, 3))):
                    length = draw(st.floats(60, 900))
                    bookings.append(
                        Booking(
                            k.kitchen_id,
                            station.station_id,
                            at,
                            at + length,
                            f"{k.kitchen_id}-{station.station_id}-{slot}-{n}",
                        )
                    )
                    at += length + draw(st.floats(0, 600))
    return World(kitchens, SKUS, tuple(bookings))


def concurrency_at(intervals: Iterable[tuple[float, float]], instant: float) -> int:
    """How many half-open intervals cover ``instant``."""
    return sum(start <= instant < end for start, end in intervals)
