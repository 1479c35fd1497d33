"""The store's two lanes, disk budget, device registry, alerts and HACCP evidence (real SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.executor import EventRecord
from edge_agent.safety import Evidence
from edge_agent.store import Store
from protocol import AlertRaised


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="boot-a") as opened:
        yield opened


def reading(n: int, device_id: str = "fridge-1") -> EventRecord:
    return EventRecord(
        type="readings.summary",
        payload={
            "device_id": device_id,
            "metric": "temp_c",
            "unit": "C",
            "window_start": float(n),
            "window_end": float(n) + 1,
            "count": 1,
            "min": float(n),
            "max": float(n),
            "mean": float(n),
            "last": float(n),
            "missed": 0,
        },
    )


def alert(alert_id: str = "cold_holding_breach:fridge-1:temp_c:0") -> AlertRaised:
    return AlertRaised(
        alert_id=alert_id,
        kind="cold_holding_breach",
        severity="critical",
        device_id="fridge-1",
        message="too warm",
        value=9.0,
        limit=5.0,
    )


def test_an_alert_recorded_behind_a_telemetry_backlog_is_sent_before_it(store: Store) -> None:
    """Telemetry waits unnumbered; the alert gets the next seq and leads the next batch."""
    store.append_routine(events=[reading(n) for n in range(1000)], occurred_at=1.0)
    seq = store.raise_alert(alert=alert(), at=2.0)
    assert seq == 1
    store.promote_routine(max_unacked=500)
    batch = store.pending_events(limit=500)
    assert [e.type for e in batch[:1]] == ["alert.raised"]
    assert [e.seq for e in batch] == list(range(1, 501))
    assert store.routine_depth() == 501


def test_promotion_only_fills_the_room_one_batch_has_left(store: Store) -> None:
    """With 400 priority events unacked, 100 telemetry events are numbered; none at 500."""
    for n in range(400):
        store.append_event(type="task.step_started", payload={"n": n}, occurred_at=1.0)
    store.append_routine(events=[reading(n) for n in range(300)], occurred_at=1.0)
    assert store.promote_routine(max_unacked=500) == 100
    assert store.promote_routine(max_unacked=500) == 0
    store.ack_events(up_to_seq=450)
    assert store.promote_routine(max_unacked=500) == 200
    assert store.sequence() == (700, 450)
    assert store.routine_depth() == 0


def test_over_budget_the_oldest_summaries_are_compacted_before_anything_is_dropped(
    store: Store,
) -> None:
    """One fridge's 5000 summaries over budget: merged into coarser ones (counted), every
    reading still counted in them, min/max kept; numbered events untouched."""
    for n in range(50):
        store.append_event(type="task.started", payload={"n": n}, occurred_at=1.0)
    store.append_routine(events=[reading(n) for n in range(5000)], occurred_at=1.0)
    budget = store.used_bytes() // 2
    removed = store.enforce_disk_budget(budget_bytes=budget)
    assert removed > 0 and store.used_bytes() <= budget
    assert store.counters() == {"routine_compacted": removed}
    assert store.outbox_depth() == 50
    store.promote_routine(max_unacked=10_000)
    summaries = [e.payload for e in store.pending_events(limit=10_000)[50:]]
    assert sum(s["count"] for s in summaries) == 5000
    assert (summaries[0]["min"], max(s["max"] for s in summaries)) == (0.0, 4999.0)
    assert [s["window_start"] for s in summaries] == sorted(s["window_start"] for s in summaries)


def test_summaries_that_cannot_be_merged_are_dropped_oldest_first_and_counted(
    store: Store,
) -> None:
    """5000 summaries of 5000 different probes: nothing to merge, the oldest are dropped."""
    store.append_routine(
        events=[reading(n, device_id=f"probe-{n}") for n in range(5000)], occurred_at=1.0
    )
    budget = store.used_bytes() // 2
    dropped = store.enforce_disk_budget(budget_bytes=budget)
    assert dropped > 0 and store.used_bytes() <= budget
    assert store.counters() == {"routine_dropped": dropped}
    store.promote_routine(max_unacked=10_000)
    assert store.pending_events(limit=1)[0].payload["device_id"] == f"probe-{dropped}"


def test_alerts_and_task_events_are_recorded_when_the_budget_is_exhausted(store: Store) -> None:
    """A budget below what the store already holds never refuses a task event or an alert."""
    store.append_routine(events=[reading(n) for n in range(500)], occurred_at=1.0)
    store.enforce_disk_budget(budget_bytes=1)
    assert store.routine_depth() == 0
    assert store.append_event(type="task.started", payload={}, occurred_at=2.0) == 1
    assert store.raise_alert(alert=alert(), at=3.0) == 2
    assert store.enforce_disk_budget(budget_bytes=1) == 0
    assert [e.type for e in store.pending_events(limit=10)] == ["task.started", "alert.raised"]


def test_an_alert_is_recorded_once_with_its_event_and_evidence(store: Store) -> None:
    """Raising the same alert_id twice records one alert, one event, one set of evidence."""
    proof = Evidence(
        device_id="fridge-1",
        probe="temp_c",
        value_c=9.0,
        measured_at=1.5,
        reason="excursion",
        limit_c=5.0,
        alert_id=alert().alert_id,
    )
    assert store.raise_alert(alert=alert(), at=2.0, evidence=[proof]) == 1
    assert store.raise_alert(alert=alert(), at=3.0, evidence=[proof]) is None
    assert [e.type for e in store.pending_events(limit=10)] == ["alert.raised", "haccp.evidence"]
    assert store.evidence() == [proof]
    assert [a["alert_id"] for a in store.alerts(open_only=True)] == [alert().alert_id]
    assert store.record_corrective_action(
        alert_id=alert().alert_id, action="discarded", acted_by="badge-3", at=4.0
    )
    assert store.clear_alert(alert_id=alert().alert_id, at=5.0)
    assert store.clear_alert(alert_id=alert().alert_id, at=6.0) is None
    assert store.alerts(open_only=True) == []
    assert store.alerts()[0]["acted_by"] == "badge-3"
    assert store.evidence()[0].actor == "badge-3"
    assert [e.payload.get("reason") for e in store.pending_events(limit=10)] == [
        None,
        None,
        "corrective_action",
        "condition_cleared",
    ]
    assert store.record_corrective_action(alert_id="nope", action="x", acted_by=None, at=7) is None


def test_a_device_status_change_is_one_device_status_event(store: Store) -> None:
    """Retained repeats of the same status record nothing; a change appends device.status."""
    store.record_birth(
        device_id="oven-1", link="mqtt", kind="oven", model="m", firmware="1", at=1.0
    )
    assert store.record_device_status(device_id="oven-1", link="mqtt", status="online", at=2.0)
    assert (
        store.record_device_status(device_id="oven-1", link="mqtt", status="online", at=3.0) is None
    )
    assert store.record_device_status(device_id="oven-1", link="mqtt", status="offline", at=4.0)
    events = store.pending_events(limit=10)
    assert [e.payload for e in events] == [
        {"device_id": "oven-1", "status": "online", "kind": "oven"},
        {"device_id": "oven-1", "status": "offline", "kind": "oven"},
    ]
    assert store.devices()[0]["status"] == "offline"


@settings(max_examples=60, deadline=None)
@given(
    script=st.lists(
        st.sampled_from(["task", "alert", "routine", "promote", "ack", "budget"]), max_size=60
    )
)
def test_any_mix_of_lanes_acks_and_budget_keeps_seq_gap_free_and_priority_events_whole(
    script: list[str],
) -> None:
    """Numbered events are never dropped or renumbered; pending is always a contiguous run."""
    with Store.open(Path(":memory:"), boot_id="b") as store:
        priority: set[str] = set()
        for n, action in enumerate(script):
            if action == "task":
                store.append_event(type="task.started", payload={"id": f"t{n}"}, occurred_at=n)
                priority.add(f"t{n}")
            elif action == "alert":
                store.raise_alert(alert=alert(f"a{n}"), at=n)
                priority.add(f"a{n}")
            elif action == "routine":
                store.append_routine(events=[reading(n)] * 30, occurred_at=n)
            elif action == "promote":
                store.promote_routine(max_unacked=40)
            elif action == "ack":
                last, acked = store.sequence()
                for event in store.pending_events(limit=10):
                    priority.discard(event.payload.get("id") or event.payload.get("alert_id", ""))
                store.ack_events(up_to_seq=min(last, acked + 10))
            else:
                store.enforce_disk_budget(budget_bytes=1)
            last, acked = store.sequence()
            pending = store.pending_events(limit=1000)
            assert [e.seq for e in pending] == list(range(acked + 1, last + 1))
        pending_ids = {
            e.payload.get("id") or e.payload.get("alert_id")
            for e in store.pending_events(limit=1000)
        }
        assert priority <= pending_ids


def test_a_group_commit_numbers_its_events_contiguously_after_the_last_seq(store: Store) -> None:
    """append_events after single appends continues the same gap-free numbering."""
    store.append_event(type="task.started", payload={}, occurred_at=1.0)
    seqs = store.append_events(
        events=[EventRecord(type="alert.raised", payload={"n": n}) for n in range(3)],
        occurred_at=2.0,
    )
    assert seqs == [2, 3, 4]
    assert store.sequence() == (4, 0)
    assert [e.payload for e in store.pending_events(limit=10)][1:] == [{"n": 0}, {"n": 1}, {"n": 2}]
