"""Seeded demand: a daily curve with rushes and spikes, a SKU mix, and time compression."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.demand import (
    DemandProfile,
    Rush,
    SkuShare,
    Spike,
    TimeCompression,
    compress,
    generate,
    peak_rate,
    rate_at,
)

MIX = (
    SkuShare("roast-chicken", 3.0, "normal"),
    SkuShare("fries", 1.0, "high", 1, 2),
)
PROFILE = DemandProfile(base_per_h=20, sku_mix=MIX)

hours = st.floats(min_value=0, max_value=23.999)
profiles = st.builds(
    DemandProfile,
    base_per_h=st.floats(min_value=0, max_value=100),
    rushes=st.lists(
        st.builds(
            Rush,
            peak_h=hours,
            width_h=st.floats(min_value=0.1, max_value=4),
            extra_per_h=st.floats(min_value=0, max_value=200),
        ),
        max_size=3,
    ).map(tuple),
    spikes=st.lists(
        st.builds(
            Spike,
            start_h=hours,
            duration_h=st.floats(min_value=0, max_value=3),
            factor=st.floats(min_value=0, max_value=5),
        ),
        max_size=2,
    ).map(tuple),
    sku_mix=st.just(MIX),
)


@given(profiles, hours)
def test_rate_is_never_negative_and_never_above_the_thinning_ceiling(
    profile: DemandProfile, hour: float
) -> None:
    """0 <= rate_at(h) <= peak_rate for every hour of every profile."""
    assert 0.0 <= rate_at(profile, hour) <= peak_rate(profile) + 1e-9


@settings(max_examples=30)
@given(profiles, st.integers(min_value=0, max_value=2**32))
def test_same_seed_gives_the_same_orders_in_time_order_within_opening_hours(
    profile: DemandProfile, seed: int
) -> None:
    """generate is reproducible, sorted, and only orders while the kitchen is open."""
    orders = generate(profile, seed=seed, start_h=10, end_h=14)
    assert orders == generate(profile, seed=seed, start_h=10, end_h=14)
    assert [o.at_h for o in orders] == sorted(o.at_h for o in orders)
    assert all(profile.open_h <= o.at_h < profile.close_h for o in orders)
    assert len({o.key for o in orders}) == len(orders)


def test_lunch_and_dinner_rush_are_busier_than_mid_afternoon() -> None:
    """More orders arrive in the lunch hour and the dinner hour than at 15:00-16:00."""
    orders = generate(PROFILE, seed=3)
    per_hour = Counter(int(o.at_h) for o in orders)
    assert per_hour[12] > 2 * per_hour[15]
    assert per_hour[19] > 2 * per_hour[15]
    assert per_hour[3] == 0


def test_a_spike_multiplies_the_rate_while_it_lasts() -> None:
    """A 3x spike from 15:00 to 16:00 triples the rate then and only then."""
    spiky = DemandProfile(base_per_h=20, sku_mix=MIX, spikes=(Spike(15.0, 1.0, 3.0),))
    assert rate_at(spiky, 15.5) == 3 * rate_at(PROFILE, 15.5)
    assert rate_at(spiky, 16.5) == rate_at(PROFILE, 16.5)


def test_sku_mix_follows_weights_and_carries_priorities_and_quantities() -> None:
    """With weights 3:1, about three quarters are roast chicken; fries are high priority, 1-2."""
    orders = generate(PROFILE.scaled(4), seed=5)
    counts = Counter(o.sku_id for o in orders)
    share = counts["roast-chicken"] / len(orders)
    assert 0.68 < share < 0.82
    fries = [o for o in orders if o.sku_id == "fries"]
    assert {o.priority for o in fries} == {"high"}
    assert {o.quantity for o in fries} <= {1, 2}


def test_compression_maps_the_window_onto_the_run_and_drops_the_rest() -> None:
    """A 4-hour window in 120 s: 13:00 is at 60 s; orders outside the window are left out."""
    tc = TimeCompression(start_h=11, end_h=15, run_s=120)
    compressed = compress(generate(PROFILE, seed=1), tc)
    assert compressed
    assert all(0 <= at < 120 for at, _ in compressed)
    assert all(11 <= o.at_h < 15 for _, o in compressed)
    assert tc.real_seconds(30) == 15.0
