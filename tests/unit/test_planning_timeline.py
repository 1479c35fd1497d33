"""Slot timelines: a placement never overfills a station, and it is the latest (or earliest)."""

from __future__ import annotations

import signal

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.timeline import SlotTimeline

FAST = settings(max_examples=150, deadline=None)

bookings_st = st.lists(
    st.tuples(st.integers(0, 100), st.integers(1, 30)).map(lambda p: (float(p[0]), float(sum(p)))),
    max_size=12,
)
query_st = st.tuples(st.integers(0, 120), st.integers(0, 120), st.integers(1, 40))


def _timeline(slots: int, bookings: list[tuple[float, float]]) -> SlotTimeline:
    timeline = SlotTimeline(slots)
    for start, end in bookings:
        timeline.book(start, end)
    return timeline


def _free(timeline: SlotTimeline, start: float, duration: float) -> bool:
    return timeline.peak(start, start + duration) < timeline.slots


@FAST
@given(st.integers(1, 3), bookings_st, query_st)
def test_latest_start_is_free_and_nothing_later_is(
    slots: int, bookings: list[tuple[float, float]], query: tuple[int, int, int]
) -> None:
    """The chosen start has a free slot throughout, and no later start in range has one."""
    earliest, latest, duration = float(query[0]), float(query[1]), float(query[2])
    timeline = _timeline(slots, bookings)
    found = timeline.latest_start(earliest=earliest, latest=latest, duration=duration)
    candidates = {latest} | {t - duration for t in timeline.times} | set(timeline.times)
    candidates = {c for c in candidates if earliest <= c <= latest}
    if found is None:
        assert not any(_free(timeline, c, duration) for c in candidates)
        return
    assert earliest <= found <= latest
    assert _free(timeline, found, duration)
    assert not any(_free(timeline, c, duration) for c in candidates if c > found)


@FAST
@given(st.integers(1, 3), bookings_st, query_st)
def test_earliest_start_is_free_and_nothing_earlier_is(
    slots: int, bookings: list[tuple[float, float]], query: tuple[int, int, int]
) -> None:
    """The ASAP variant: free throughout, and no earlier start in range is."""
    earliest, latest, duration = float(query[0]), float(query[1]), float(query[2])
    timeline = _timeline(slots, bookings)
    found = timeline.earliest_start(earliest=earliest, latest=latest, duration=duration)
    candidates = {earliest} | set(timeline.times)
    candidates = {c for c in candidates if earliest <= c <= latest}
    if found is None:
        assert not any(_free(timeline, c, duration) for c in candidates)
        return
    assert earliest <= found <= latest
    assert _free(timeline, found, duration)
    assert not any(_free(timeline, c, duration) for c in candidates if c < found)


def test_unbook_restores_the_timeline() -> None:
    """A tentative booking that is released leaves the station as it was."""
    timeline = _timeline(1, [(0.0, 10.0)])
    timeline.book(20.0, 30.0)
    timeline.unbook(20.0, 30.0)
    assert timeline.latest_start(earliest=0.0, latest=25.0, duration=10.0) == 25.0
    assert timeline.busy_s == 10.0


@FAST
@given(
    st.integers(1, 3),
    st.lists(
        st.tuples(st.integers(0, 100), st.integers(-5, 30)).map(
            lambda p: (float(p[0]), float(p[0] + p[1]))
        ),
        max_size=20,
    ),
)
def test_a_timeline_built_in_one_sweep_is_the_one_booked_interval_by_interval(
    slots: int, bookings: list[tuple[float, float]]
) -> None:
    """Same boundaries and concurrency as booking each interval in turn (empty and inverted
    intervals ignored alike), so every placement on it is the same."""
    swept = SlotTimeline.of(slots, bookings)
    booked = _timeline(slots, bookings)
    assert (swept.times, swept.counts, swept.slots) == (booked.times, booked.counts, slots)
    assert abs(swept.busy_s - booked.busy_s) < 1e-9


def test_a_start_that_rounds_past_the_full_segment_does_not_loop_for_ever() -> None:
    """``48.1 - d + d`` rounds above 48.1 for this ``d``: the search used to find the same full
    segment for ever (found by review, with a random search)."""
    timeline = SlotTimeline(2)
    timeline.times = [5.0, 10.0, 14.3, 22.0, 29.3, 48.1, 53.2, 57.0]
    timeline.counts = [1, 0, 1, 0, 1, 2, 1, 0]
    duration = 8.077587732631184
    assert (48.1 - duration) + duration > 48.1  # the rounding this is about

    def hung(_signum: int, _frame: object) -> None:
        raise TimeoutError("latest_start did not return within 5 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        found = timeline.latest_start(
            earliest=17.105453652307652, latest=44.805928935986, duration=duration
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert found is not None
    assert found + duration <= 48.1
    assert timeline.peak(found, found + duration) < timeline.slots
