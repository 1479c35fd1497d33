"""Sync with two lanes and a heartbeat that tells the truth; retries that survive days down."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.executor import EventRecord
from edge_agent.links.control_plane import ControlPlaneClient
from edge_agent.store import Store
from edge_agent.sync import SyncCycle
from edge_agent.testing import FakeControlPlane
from protocol import AlertRaised


@dataclass
class FakeClock:
    mono: float = 100.0
    wall_time: float = 1_767_225_600.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_time


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


def cycle(store: Store, fake: FakeControlPlane, *, forward: bool) -> SyncCycle:
    return SyncCycle(
        store=store,
        client=ControlPlaneClient(
            "http://cp", credential=fake.credential, transport=fake.transport()
        ),
        clock=FakeClock(),
        agent_id=fake.agent_id,
        kitchen_id="k1",
        max_active_tasks=2,
        forward_routine=forward,
    )


def summaries(n: int) -> list[EventRecord]:
    return [
        EventRecord(
            type="readings.summary",
            payload={
                "device_id": "fridge-1",
                "metric": "air_temp",
                "window_start": 1.0,
                "window_end": 2.0,
                "count": 1,
                "min": 3.0,
                "max": 3.0,
                "mean": 3.0,
                "last": 3.0,
            },
        )
    ] * n


def test_an_alert_raised_behind_a_telemetry_backlog_reaches_the_control_plane_first(
    store: Store,
) -> None:
    """600 summaries wait; an alert recorded after them is seq 1, in the first batch."""
    fake = FakeControlPlane(kitchen_id="k1")
    store.append_routine(events=summaries(600), occurred_at=1.0)
    store.raise_alert(
        alert=AlertRaised(
            alert_id="a1", kind="probe_silent", severity="warning", message="no reading"
        ),
        at=2.0,
    )
    sync = cycle(store, fake, forward=True)
    sync.run_once()
    assert fake.events[1].type == "alert.raised"
    assert len(fake.requests[0].events) == 500
    while store.outbox_depth() or store.routine_depth():
        sync.run_once()
    assert sorted(fake.events) == list(range(1, 602))


def test_routine_telemetry_stays_local_unless_forwarding_is_on(store: Store) -> None:
    """forward_readings off: summaries are kept in the routine lane, never numbered or sent."""
    fake = FakeControlPlane(kitchen_id="k1")
    store.append_routine(events=summaries(3), occurred_at=1.0)
    cycle(store, fake, forward=False).run_once()
    assert fake.events == {}
    assert store.routine_depth() == 3


def test_the_heartbeat_carries_version_clock_outbox_backlog_and_open_alerts(
    store: Store,
) -> None:
    """Version, the agent's wall clock, outbox depth, routine backlog, drops and open alerts."""
    fake = FakeControlPlane(kitchen_id="k1", fail_status=503)
    store.append_routine(events=summaries(2), occurred_at=1.0)
    store.raise_alert(
        alert=AlertRaised(alert_id="a1", kind="device_offline", severity="warning", message="x"),
        at=2.0,
    )
    request = cycle(store, fake, forward=False).build_request()
    beat = request.heartbeat
    assert (beat.agent_version, beat.sent_at) == (__version__, 1_767_225_600.0)
    assert (beat.outbox_depth, beat.routine_backlog, beat.open_alerts) == (1, 2, 1)
    assert beat.oldest_event_age_s == pytest.approx(1_767_225_598.0)


def test_the_retry_schedule_stays_capped_after_days_of_failures() -> None:
    """A week of retries every few minutes: every wait within the cap, no overflow, jittered."""
    backoff = Backoff(base_s=1.0, cap_s=300.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(7 * 24 * 60)]
    assert max(delays) <= 300.0
    assert len({round(d, 3) for d in delays[-100:]}) > 90


def test_retry_after_is_a_floor_with_up_to_ten_percent_jitter() -> None:
    """Retry-After 30 s: the agent waits 30-33 s, differently from one agent to the next."""
    waits = [Backoff(rng=random.Random(n)).next_delay(floor_s=30.0) for n in range(50)]
    assert all(30.0 <= w <= 33.0 for w in waits)
    assert len({round(w, 3) for w in waits}) > 40
