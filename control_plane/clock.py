"""An agent's clock offset, estimated from its syncs (pure: no I/O, no clock of its own).

The control plane places agent timestamps (``occurred_at``) on its own timeline with it, so
an audit trail of a kitchen whose box clock is off still reads in the right order.
"""

from __future__ import annotations

from dataclasses import dataclass


def estimate_clock_offset(*, sent_at: float, received_at: float) -> float:
    """One sample of the offset: seconds to add to the agent's wall clock to land on the
    server's timeline, plus the request's one-way delay (which is never negative)."""
    return received_at - sent_at


@dataclass(frozen=True)
class ClockEstimate:
    """The smoothed clock offset of one agent and when its best sample was taken."""

    offset_s: float
    measured_at: float
    samples: int


def update_clock_estimate(
    previous: ClockEstimate | None,
    *,
    sent_at: float,
    received_at: float,
    drift_ppm: float,
    step_s: float,
) -> ClockEstimate:
    """Fold one sync's sample into the estimate with a minimum-delay filter.

    Every sample is ``true_offset + one_way_delay`` with a delay >= 0, so the smallest recent
    sample is the best estimate; a delayed request (a slow network, a queue on the server) only
    ever makes a sample larger. The kept minimum is allowed to loosen by ``drift_ppm`` per
    second of age, so a slowly drifting clock is followed; a sample more than ``step_s`` above
    it means the agent's clock was set back, and restarts the estimate.

    >>> first = update_clock_estimate(None, sent_at=1030.0, received_at=1000.2,
    ...                               drift_ppm=200, step_s=5)
    >>> round(first.offset_s, 3)
    -29.8
    >>> delayed = update_clock_estimate(first, sent_at=1040.0, received_at=1011.0,
    ...                                 drift_ppm=200, step_s=5)
    >>> round(delayed.offset_s, 3)
    -29.8
    """
    sample = estimate_clock_offset(sent_at=sent_at, received_at=received_at)
    if previous is None:
        return ClockEstimate(sample, received_at, 1)
    age_s = max(0.0, received_at - previous.measured_at)
    bound = previous.offset_s + age_s * drift_ppm * 1e-6
    samples = previous.samples + 1
    if sample <= bound or sample - previous.offset_s > step_s:
        return ClockEstimate(sample, received_at, samples)
    return ClockEstimate(previous.offset_s, previous.measured_at, samples)


def server_time_of(occurred_at: float, *, offset_s: float, received_at: float) -> float:
    """An agent timestamp on the server's timeline; nothing happened after we received it."""
    return min(occurred_at + offset_s, received_at)
