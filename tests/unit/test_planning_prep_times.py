"""Learned prep times: fallbacks, convergence, outliers, late reports, drift and error."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.prep_times import (
    NOMINAL_P90_FACTOR,
    PrepObservation,
    PrepTimeModel,
    observe,
)

NOW = 10_000_000.0
FAST = settings(max_examples=25, deadline=None)


def _learn(
    durations: list[float], *, kitchen: str = "k1", start: float = 0.0, gap: float = 60.0
) -> PrepTimeModel:
    model = PrepTimeModel()
    for n, duration in enumerate(durations):
        done = start + n * gap
        model = observe(model, NOW, PrepObservation(kitchen, "soup", done - duration, done))
    return model


def test_without_data_the_recipe_nominal_is_used() -> None:
    """No completions: p50 is the nominal duration and p90 a fixed factor above it."""
    estimate = PrepTimeModel().estimate("k1", "soup", nominal_s=400.0)
    assert (estimate.p50_s, estimate.p90_s, estimate.source) == (
        400.0,
        400.0 * NOMINAL_P90_FACTOR,
        "nominal",
    )


def test_another_kitchens_history_is_the_fallback_before_the_nominal() -> None:
    """A kitchen without its own history borrows the SKU's history across kitchens."""
    model = _learn([500.0] * 10, kitchen="k1")
    estimate = model.estimate("k2", "soup", nominal_s=300.0)
    assert (estimate.p50_s, estimate.source) == (500.0, "sku")


def test_a_few_completions_are_not_enough_to_trust() -> None:
    """Fewer than ``min_samples`` completions keep the fallback."""
    model = _learn([500.0] * 4)
    assert model.estimate("k1", "soup", nominal_s=300.0).source == "nominal"


@FAST
@given(st.integers(0, 2**32 - 1), st.floats(120, 1800), st.floats(0.1, 0.4))
def test_quantiles_converge_on_a_lognormal(seed: int, median: float, sigma: float) -> None:
    """p50 and p90 of a log-normal duration are learned within 15 % and 20 %."""
    rnd = random.Random(seed)
    model = _learn([median * math.exp(rnd.gauss(0, sigma)) for _ in range(400)])
    estimate = model.estimate("k1", "soup", nominal_s=1.0)
    true_p90 = median * math.exp(1.2816 * sigma)
    assert abs(estimate.p50_s - median) <= 0.15 * median
    assert abs(estimate.p90_s - true_p90) <= 0.2 * true_p90


@FAST
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.3), st.floats(5.0, 100.0))
def test_outliers_do_not_move_the_p90(seed: int, share: float, factor: float) -> None:
    """Up to 30 % of wildly long completions (a forgotten done button) leave p90 near truth."""
    rnd = random.Random(seed)
    durations = [
        300.0 * factor if rnd.random() < share else 300.0 * math.exp(rnd.gauss(0, 0.2))
        for _ in range(300)
    ]
    estimate = _learn(durations).estimate("k1", "soup", nominal_s=1.0)
    true_p90 = 300.0 * math.exp(1.2816 * 0.2)
    assert estimate.p90_s <= 1.25 * true_p90
    assert estimate.p50_s <= 1.2 * 300.0


@FAST
@given(
    st.lists(st.floats(60, 900), min_size=5, max_size=60),
    st.randoms(use_true_random=False),
)
def test_estimates_do_not_depend_on_arrival_order(
    durations: list[float], rnd: random.Random
) -> None:
    """Completions reported late, in any order, give the same estimate as in-order reports."""
    observations = [
        PrepObservation("k1", "soup", n * 600.0 - d, n * 600.0) for n, d in enumerate(durations)
    ]
    shuffled = list(observations)
    rnd.shuffle(shuffled)
    in_order, out_of_order = PrepTimeModel(), PrepTimeModel()
    for a, b in zip(observations, shuffled, strict=True):
        in_order = observe(in_order, NOW, a)
        out_of_order = observe(out_of_order, NOW, b)
    assert in_order.estimate("k1", "soup", nominal_s=1.0) == out_of_order.estimate(
        "k1", "soup", nominal_s=1.0
    )


def test_an_old_completion_reported_late_does_not_displace_recent_ones() -> None:
    """Once the window is full, a completion older than all of it is dropped, not kept."""
    model = _learn([300.0] * 128, start=1_000_000.0)
    stale = observe(model, NOW, PrepObservation("k1", "soup", 0.0, 5_000.0))
    assert stale.estimate("k1", "soup", nominal_s=1.0) == model.estimate(
        "k1", "soup", nominal_s=1.0
    )


def test_the_estimate_follows_a_kitchen_that_slows_down() -> None:
    """After a regime change to twice the duration, p50 moves to the new regime."""
    model = _learn([300.0] * 100 + [600.0] * 100, gap=3600.0)
    assert model.estimate("k1", "soup", nominal_s=1.0).p50_s == 600.0


def test_recent_completions_weigh_more_than_old_ones() -> None:
    """With a short half-life, a minority of recent slow completions already moves the p50."""
    model = _learn([300.0] * 60 + [600.0] * 40, gap=24 * 3600.0)
    assert model.estimate("k1", "soup", nominal_s=1.0).p50_s == 600.0


def test_a_completion_dated_in_the_future_is_clamped_to_now() -> None:
    """An agent clock ahead of ours cannot age the whole history."""
    model = _learn([300.0] * 20, start=NOW - 20 * 60)
    future = observe(model, NOW, PrepObservation("k1", "soup", NOW + 10**7 - 900, NOW + 10**7))
    kept = future.by_kitchen_sku["k1", "soup"].completions
    assert max(done for done, _ in kept) == NOW


def test_prediction_error_tracks_bias_and_p90_coverage() -> None:
    """A kitchen consistently slower than learned shows a positive bias and low coverage."""
    model = _learn([300.0] * 10)
    for n in range(10):
        done = 10_000.0 + n * 60
        model = observe(model, NOW, PrepObservation("k1", "soup", done - 450.0, done))
    error = model.error_of("k1", "soup")
    assert error.count == 15  # scored from the sixth completion on, once an estimate exists
    assert error.bias_s > 0
    assert error.mean_abs_error_s > 0
    assert error.p90_coverage < 0.9
    assert model.total_error().count == error.count
