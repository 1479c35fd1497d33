"""Sync batch decisions: dedupe by seq, contiguous prefix, gap detection, clock offset."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from control_plane.reconcile import estimate_clock_offset, plan_batch


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
