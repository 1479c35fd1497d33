"""The monitor and the ingest loop on a real SQLite store: alerts offline, evidence, gaps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import StoreError
from edge_agent.ingest import Ingest
from edge_agent.monitor import SafetyMonitor
from edge_agent.readings import CorrectiveAction, Observed, ReadingIn, StatusSeen
from edge_agent.safety import RULE_PACKS
from edge_agent.store import Store

KINDS = {"fridge-1": "fridge", "oven-1": "oven"}


@dataclass
class FakeClock:
    wall_time: float = 1_767_225_600.0

    def monotonic(self) -> float:
        return self.wall_time

    def wall(self) -> float:
        return self.wall_time


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


def make_ingest(
    store: Store, clock: FakeClock, overrides: dict[str, dict[str, float | str]] | None = None
) -> Ingest:
    monitor = SafetyMonitor(
        pack=RULE_PACKS["us_fda_food_code_2022"],
        kind_of=KINDS.get,
        overrides=overrides,
        offline_alert_s=300,
    )
    monitor.seed_open_alerts(a["alert_id"] for a in store.alerts(open_only=True))
    return Ingest(store=store, monitor=monitor, clock=clock, window_s=60.0)


def fridge_reading(clock: FakeClock, seq: int, value: float) -> Observed:
    reading = ReadingIn("fridge-1", "air_temp", "C", value, at=clock.wall_time)
    return Observed("fridge-1", "mqtt", seq, clock.wall_time, (reading,))


def run_fridge(ingest: Ingest, clock: FakeClock, values: list[float], start_seq: int = 1) -> None:
    for n, value in enumerate(values):
        ingest.submit(fridge_reading(clock, start_seq + n, value))
        ingest.flush()
        clock.wall_time += 300


def test_a_breach_raises_a_durable_alert_event_with_its_evidence(store: Store) -> None:
    """A fridge at 9 °C for 30 min: alert.raised in the outbox, alert row, excursion evidence;
    no network involved at all."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    run_fridge(ingest, clock, [3.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0])
    types = [e.type for e in store.pending_events(limit=100)]
    assert types.count("alert.raised") == 2  # the alarm (warning) and the breach (critical)
    breach = [a for a in store.alerts(open_only=True) if a["kind"] == "cold_holding_breach"]
    assert len(breach) == 1 and breach[0]["severity"] == "critical"
    proof = [e for e in store.evidence() if e.alert_id == breach[0]["alert_id"]]
    assert proof and all(e.value_c == 9.0 and e.limit_c == 5.0 for e in proof)
    assert [e.reason for e in store.evidence()][:2] == ["interval", "excursion"]


def test_the_return_within_limits_clears_the_alert(store: Store) -> None:
    """Back to 3 °C: the breach and alarm alerts are closed in the store."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    run_fridge(ingest, clock, [9.0] * 8 + [3.0])
    assert store.alerts(open_only=True) == []
    assert {a["kind"] for a in store.alerts()} == {"cold_holding_breach", "cold_holding_alarm"}


def test_a_restarted_monitor_does_not_raise_an_open_alert_again(store: Store) -> None:
    """After a restart mid-breach the same open alert is not recorded a second time."""
    clock = FakeClock()
    run_fridge(make_ingest(store, clock), clock, [9.0] * 8)
    run_fridge(make_ingest(store, clock), clock, [9.0] * 8, start_seq=9)
    types = [e.type for e in store.pending_events(limit=1000)]
    assert types.count("alert.raised") == 2  # the new readings are evidence, not new alerts
    assert len(store.alerts(open_only=True)) == 2


def test_interval_evidence_follows_the_configured_interval(store: Store) -> None:
    """With evidence every 15 min and readings every 5 min, every third reading is kept."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    run_fridge(ingest, clock, [3.0] * 9)
    assert [e.reason for e in store.evidence()] == ["interval"] * 3
    custom = make_ingest(store, clock, {"fridge-1": {"evidence_interval_s": 300}})
    run_fridge(custom, clock, [3.0] * 3, start_seq=10)
    assert len(store.evidence()) == 6


def test_seq_gaps_are_counted_on_the_device_and_in_its_summary(store: Store) -> None:
    """Seqs 1, 2, 5, 6: two messages missed, in the registry and the readings summary."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    for seq in (1, 2, 5, 6):
        ingest.submit(fridge_reading(clock, seq, 3.0))
    ingest.flush(force=True)
    assert store.devices()[0]["missed_messages"] == 2
    store.promote_routine()
    events = store.pending_events(limit=10)
    summaries = [e.payload for e in events if e.type == "readings.summary"]
    assert summaries[0]["count"] == 4 and summaries[0]["missed"] == 2


def test_a_device_offline_for_the_delay_raises_an_alert_and_a_status_event(store: Store) -> None:
    """Offline (Last Will): device.status event at once, device_offline alert after 300 s;
    back online resolves it (alert.resolved, condition_cleared)."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    ingest.submit(StatusSeen("fridge-1", "mqtt", clock.wall_time, online=False, kind="fridge"))
    ingest.flush()
    ingest.apply(ingest.monitor.tick(clock.wall_time + 299), at=clock.wall_time + 299)
    assert store.alerts() == []
    ingest.apply(ingest.monitor.tick(clock.wall_time + 300), at=clock.wall_time + 300)
    assert [a["kind"] for a in store.alerts(open_only=True)] == ["device_offline"]
    ingest.submit(StatusSeen("fridge-1", "mqtt", clock.wall_time + 400, online=True))
    ingest.flush()
    assert store.alerts(open_only=True) == []
    assert [e.type for e in store.pending_events(limit=10)] == [
        "device.status",
        "alert.raised",
        "device.status",
        "alert.resolved",
    ]


def test_a_full_ingest_queue_drops_and_counts_instead_of_blocking(store: Store) -> None:
    """A flood beyond the queue's bound is dropped and counted as queue_full."""
    clock = FakeClock()
    monitor = SafetyMonitor(pack=RULE_PACKS["us_fda_food_code_2022"], kind_of=KINDS.get)
    ingest = Ingest(store=store, monitor=monitor, clock=clock, queue_size=10)
    accepted = [ingest.submit(fridge_reading(clock, n, 3.0)) for n in range(15)]
    assert accepted.count(False) == 5
    assert ingest.counts()["dropped"] == {"queue_full": 5}
    assert ingest.flush() == 10


def test_a_staff_corrective_action_is_recorded_on_the_alert_and_its_evidence(
    store: Store,
) -> None:
    """A kitchen display's corrective_action names the alert, the action and the badge: the
    alert and its excursion evidence carry who acted, and alert.resolved is recorded."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    run_fridge(ingest, clock, [9.0] * 8)
    breach = next(a for a in store.alerts() if a["kind"] == "cold_holding_breach")
    ingest.submit(CorrectiveAction(breach["alert_id"], "discarded", "badge-9", clock.wall_time))
    ingest.submit(CorrectiveAction("no-such-alert", "discarded", "badge-9", clock.wall_time))
    ingest.flush()
    acted = next(a for a in store.alerts() if a["alert_id"] == breach["alert_id"])
    assert (acted["corrective_action"], acted["acted_by"]) == ("discarded", "badge-9")
    assert {e.actor for e in store.evidence() if e.alert_id == breach["alert_id"]} == {"badge-9"}
    resolved = store.pending_events(limit=100)[-1]
    assert resolved.type == "alert.resolved" and resolved.payload["acted_by"] == "badge-9"
    assert ingest.counts()["dropped"] == {"unknown_alert": 1}


def test_an_alert_whose_write_fails_is_stored_on_a_later_tick(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full / SQLITE_BUSY during raise_alert: the alert is kept and written next tick."""
    clock = FakeClock()
    ingest = make_ingest(store, clock)
    real = store.raise_alert
    failing = True

    def flaky(**kwargs: Any) -> int | None:
        if failing:
            raise StoreError("database or disk is full")
        return real(**kwargs)

    monkeypatch.setattr(store, "raise_alert", flaky)
    run_fridge(ingest, clock, [3.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0])
    assert store.alerts() == [] and ingest.retry_pending() == 2
    failing = False
    ingest.apply(ingest.monitor.tick(clock.wall()), at=clock.wall())
    assert {a["kind"] for a in store.alerts(open_only=True)} == {
        "cold_holding_breach",
        "cold_holding_alarm",
    }
    assert ingest.retry_pending() == 0 and ingest.counts()["alerts_raised"] == 2
