"""Equipment health on the agent: the pure derivation of ok/degraded/failed, and its changes
recorded as ``device.status`` events with ``health`` in the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.health import HealthChange, HealthTracker
from edge_agent.ingest import Ingest
from edge_agent.monitor import SafetyMonitor
from edge_agent.readings import Observed, StatusSeen
from edge_agent.safety import RULE_PACKS
from edge_agent.store import Store
from protocol.events import DeviceStatus

T0 = 1_767_225_600.0


def online_tracker(**settings: float) -> HealthTracker:
    tracker = HealthTracker(**settings)  # type: ignore[arg-type]
    tracker.online("oven-1", True)
    assert tracker.changes(now=T0) == [HealthChange("oven-1", "ok", None)]
    return tracker


def test_an_unrestored_alarm_degrades_and_its_restore_event_makes_it_ok_again() -> None:
    """temperature_alarm (not reaching set point) -> degraded; temperature_restored -> ok."""
    tracker = online_tracker()
    tracker.observe("oven-1", at=T0, event=("temperature_alarm", "critical"))
    assert tracker.changes(now=T0 + 1) == [HealthChange("oven-1", "degraded", "temperature_alarm")]
    assert tracker.changes(now=T0 + 2) == []  # transitions, not samples
    tracker.observe("oven-1", at=T0 + 3, event=("temperature_restored", "info"))
    assert tracker.changes(now=T0 + 4) == [HealthChange("oven-1", "ok", None)]


def test_an_alarm_nothing_restores_ends_after_the_hold_time() -> None:
    """element_fault has no restore event: degraded until alarm_hold_s after it was raised."""
    tracker = online_tracker(alarm_hold_s=600)
    tracker.observe("oven-1", at=T0, event=("element_fault", "critical"))
    assert [c.health for c in tracker.changes(now=T0 + 599)] == ["degraded"]
    assert [c.health for c in tracker.changes(now=T0 + 600)] == ["ok"]


def test_a_cleared_event_ends_its_alarm_and_info_events_are_not_alarms() -> None:
    """``<alarm>_cleared`` restores ``<alarm>``; info events and staff input change nothing."""
    tracker = online_tracker()
    tracker.observe("oven-1", at=T0, event=("door_closed", "info"))
    tracker.observe("oven-1", at=T0, event=("corrective_action", "warning"))
    assert tracker.changes(now=T0 + 1) == []
    tracker.observe("oven-1", at=T0 + 2, event=("fan_alarm", "warning"))
    tracker.observe("oven-1", at=T0 + 3, event=("fan_alarm_cleared", "info"))
    assert tracker.changes(now=T0 + 4) == []


def test_a_fault_mode_is_failed_and_wins_over_an_alarm() -> None:
    """The retained state's ``fault`` mode is failed, whatever else is going on."""
    tracker = online_tracker()
    tracker.observe("oven-1", at=T0, event=("temperature_alarm", "critical"), mode="fault")
    assert tracker.changes(now=T0 + 1) == [HealthChange("oven-1", "failed", "fault")]
    tracker.observe("oven-1", at=T0 + 2, mode="idle")
    assert [c.health for c in tracker.changes(now=T0 + 3)] == ["degraded"]


def test_an_offline_device_is_not_reported_by_health() -> None:
    """Offline is the status's business: no health change for a device that went away."""
    tracker = online_tracker()
    tracker.observe("oven-1", at=T0, event=("temperature_alarm", "critical"))
    tracker.online("oven-1", False)
    assert tracker.changes(now=T0 + 1) == []


@given(missed=st.lists(st.integers(0, 5), min_size=1, max_size=60))
def test_telemetry_is_intermittent_exactly_when_a_closed_window_lost_enough(
    missed: list[int],
) -> None:
    """Degraded after a window that lost >= 10 % (and >= 3) of the numbered messages."""
    tracker = online_tracker(window_s=300, missed_ratio=0.1, min_missed=3)
    for n, gap in enumerate(missed):
        tracker.observe("oven-1", at=T0 + n, missed=gap)
    changes = tracker.changes(now=T0 + 300)
    lost, numbered = sum(missed), sum(missed) + len(missed)
    intermittent = lost >= 3 and lost >= 0.1 * numbered
    expected = (
        [HealthChange("oven-1", "degraded", "telemetry_intermittent")] if intermittent else []
    )
    assert changes == expected


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


class Clock:
    now = T0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_an_alarm_on_mqtt_becomes_a_durable_device_status_with_health(store: Store) -> None:
    """An oven's temperature_alarm: ``device.status`` (online, degraded, reason) in the
    outbox and in the registry; the restore sends ``ok``; a repeated alarm sends nothing."""
    monitor = SafetyMonitor(pack=RULE_PACKS["us_fda_food_code_2022"], kind_of=lambda _d: "oven")
    ingest = Ingest(store=store, monitor=monitor, clock=Clock())
    ingest.submit(StatusSeen("oven-1", "mqtt", T0, online=True, kind="oven"))
    ingest.flush()
    for seq, event in enumerate(
        [("temperature_alarm", "critical"), ("temperature_alarm", "critical")], start=1
    ):
        ingest.submit(Observed("oven-1", "mqtt", seq, T0 + seq, event=event))
        ingest.flush()
    assert store.devices()[0]["health"] == "degraded"
    ingest.submit(Observed("oven-1", "mqtt", 3, T0 + 3, event=("temperature_restored", "info")))
    ingest.flush()
    statuses = [
        DeviceStatus.model_validate(e.payload)
        for e in store.pending_events(limit=100)
        if e.type == "device.status"
    ]
    assert [(s.status, s.health, s.reason) for s in statuses] == [
        ("online", None, None),
        ("online", "degraded", "temperature_alarm"),
        ("online", "ok", None),
    ]
    assert all(s.kind == "oven" for s in statuses)
