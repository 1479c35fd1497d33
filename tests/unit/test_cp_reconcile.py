"""Sync batch decisions: dedupe by seq, contiguous prefix, gap detection, clock offset."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.clock import (
    ClockEstimate,
    estimate_clock_offset,
    server_time_of,
    update_clock_estimate,
)
from control_plane.reconcile import Reconnect, plan_batch, track_reconnect

DRIFT_PPM, STEP_S = 200.0, 5.0


def fold(samples: list[tuple[float, float]]) -> ClockEstimate:
    """The estimate after (sent_at, received_at) samples, in order."""
    estimate: ClockEstimate | None = None
    for sent_at, received_at in samples:
        estimate = update_clock_estimate(
            estimate, sent_at=sent_at, received_at=received_at, drift_ppm=DRIFT_PPM, step_s=STEP_S
        )
    assert estimate is not None
    return estimate


def test_in_order_batch_is_applied_whole() -> None:
    """Seqs right after the last ack are all applied and acked."""
    assert plan_batch(0, [1, 2, 3]).apply == (1, 2, 3)


def test_already_acked_seqs_are_duplicates() -> None:
    """Re-sent events count as duplicates and are not applied again."""
    batch = plan_batch(5, [4, 5, 6])
    assert (batch.apply, batch.duplicates, batch.acked_seq) == ((6,), 2, 6)


def test_gap_stops_the_batch_and_asks_for_a_resend() -> None:
    """After a missing seq nothing is applied; resend_from names the missing seq."""
    batch = plan_batch(0, [1, 3, 4])
    assert (batch.apply, batch.resend_from, batch.acked_seq) == ((1,), 2, 1)


def test_clock_offset_moves_agent_time_onto_the_server_timeline() -> None:
    """An agent clock 30 s ahead gives an offset of -30 s."""
    assert estimate_clock_offset(sent_at=1030.0, received_at=1000.0) == -30.0


@given(st.integers(0, 50), st.lists(st.integers(1, 80), max_size=40))
def test_applied_seqs_are_exactly_the_contiguous_run_after_the_ack(
    last_acked: int, seqs: list[int]
) -> None:
    """Applied seqs continue the ack without holes, and the new ack is the last of them."""
    batch = plan_batch(last_acked, seqs)
    assert batch.apply == tuple(range(last_acked + 1, batch.acked_seq + 1))
    assert set(batch.apply) <= set(seqs)
    if batch.resend_from is not None:
        assert batch.resend_from == batch.acked_seq + 1
        assert batch.resend_from not in seqs
    else:
        assert all(seq <= batch.acked_seq for seq in seqs)


@given(
    st.floats(-3600, 3600),
    st.lists(st.floats(0, 2.0), min_size=1, max_size=30),
)
def test_clock_estimate_is_the_offset_plus_the_least_delay(
    offset: float, delays: list[float]
) -> None:
    """With a steady clock, the estimate is the true offset plus the smallest one-way delay
    seen (within the drift allowance): delayed requests never pull it away."""
    samples = []
    for n, delay in enumerate(delays):
        received = 1_000_000.0 + 10.0 * n
        samples.append((received - delay - offset, received))
    estimate = fold(samples)
    allowance = 10.0 * len(delays) * DRIFT_PPM * 1e-6
    assert offset + min(delays) - 1e-6 <= estimate.offset_s <= offset + min(delays) + allowance
    assert estimate.samples == len(delays)


def test_one_slow_request_does_not_move_the_estimate() -> None:
    """A request delayed 3 s (a queue, a slow link) is ignored by the minimum filter."""
    estimate = fold([(1000.0, 1000.05), (1010.0, 1013.0)])
    assert estimate.offset_s == pytest.approx(0.05)


def test_a_clock_set_back_restarts_the_estimate() -> None:
    """When the agent's clock is set back by a minute, the offset follows at once."""
    estimate = fold([(1000.0, 1000.05), (950.0, 1010.05)])
    assert estimate.offset_s == pytest.approx(60.05)


def test_a_slowly_drifting_clock_is_followed() -> None:
    """A clock losing 100 ppm for a day is tracked within the drift allowance."""
    seconds = range(0, 86_400 + 1, 600)
    samples = [(1000.0 + t - t * 100e-6, 1000.0 + t + 0.01) for t in seconds]
    assert fold(samples).offset_s == pytest.approx(86_400 * 100e-6 + 0.01, abs=0.05)


def test_agent_time_never_lands_after_the_server_received_it() -> None:
    """An event stamped in the future (a clock jump) is placed at the receive time."""
    assert server_time_of(2000.0, offset_s=0.0, received_at=1500.0) == 1500.0
    assert server_time_of(1000.0, offset_s=-30.0, received_at=1500.0) == 970.0


def test_reconnect_summary_spans_the_syncs_until_the_outbox_is_drained() -> None:
    """After 10 min away, three syncs drain the outbox; the summary adds them up."""
    common: dict[str, Any] = {"unreachable_after_s": 120.0, "conflicts": 0}
    first, done = track_reconnect(
        None,
        last_seen_at=0.0,
        now=600.0,
        applied=500,
        duplicates=2,
        gap=False,
        caught_up=False,
        **common,
    )
    second, _ = track_reconnect(
        first,
        last_seen_at=600.0,
        now=601.0,
        applied=0,
        duplicates=0,
        gap=True,
        caught_up=False,
        **common,
    )
    final, finished = track_reconnect(
        second,
        last_seen_at=601.0,
        now=602.0,
        applied=120,
        duplicates=1,
        gap=False,
        caught_up=True,
        **common,
    )
    assert (done, finished) == (False, True)
    assert final == Reconnect(
        started_at=600.0,
        offline_s=600.0,
        finished_at=602.0,
        syncs=3,
        events_applied=620,
        duplicates_ignored=3,
        conflicts=0,
        resend_requests=1,
    )


def test_regular_syncs_are_no_reconnect() -> None:
    """An agent that never went away has no reconnect to report."""
    summary, finished = track_reconnect(
        None,
        last_seen_at=100.0,
        now=105.0,
        unreachable_after_s=120.0,
        applied=3,
        duplicates=0,
        conflicts=0,
        gap=False,
        caught_up=True,
    )
    assert (summary, finished) == (None, False)
