"""Catch-up batches on the control plane: advertised limits, batched writes that leave the same
event log, equipment and audit chain as one-by-one writes, and the sync pacer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control_plane import audit, auth, catalogue, fleet, reconcile
from control_plane.config import Settings
from control_plane.schemas import KitchenCreate
from control_plane.store import Store
from protocol.events import EventEnvelope
from protocol.sync_api import (
    MAX_SYNC_BATCH,
    MAX_SYNC_EVENTS,
    EnrollRequest,
    Heartbeat,
    SyncRequest,
    SyncResponse,
)

T0 = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db", max_body_bytes=2 * 1024 * 1024)


@pytest.fixture
def store(settings: Settings) -> Store:
    instance = Store.open(settings.db_path)
    kitchen = {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "Grill"}]}
    catalogue.create_kitchen(instance, KitchenCreate.model_validate(kitchen), now=T0, actor="test")
    return instance


@pytest.fixture
def agent(store: Store) -> auth.AgentIdentity:
    token, _ = auth.create_enrollment_token(
        store, kitchen_id="k1", ttl_s=3600, now=T0, actor="test"
    )
    enrolled = auth.enroll(store, EnrollRequest(token=token, name="box", agent_version="1"), now=T0)
    with store.read() as reader:
        return auth.authenticate_agent(reader, enrolled.credential)


def device_status(agent: auth.AgentIdentity, seq: int, device: str, status: str) -> EventEnvelope:
    return EventEnvelope(
        agent_id=agent.agent_id,
        kitchen_id=agent.kitchen_id,
        seq=seq,
        event_id=f"e-{seq}",
        type="device.status",
        occurred_at=T0 + seq,
        payload={"device_id": device, "kind": "fridge" if seq == 1 else None, "status": status},
    )


def sync(
    store: Store, agent: auth.AgentIdentity, settings: Settings, events: list[EventEnvelope]
) -> SyncResponse:
    request = SyncRequest(
        heartbeat=Heartbeat(agent_version="1", sent_at=T0, outbox_depth=len(events)),
        events=events,
    )
    response, _ = reconcile.sync(store, agent, request, now=T0 + 10_000, settings=settings)
    return response


def test_the_answer_advertises_the_batch_limits(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """max_events is the protocol's ceiling; max_request_bytes is the server's body limit."""
    response = sync(store, agent, settings, [])
    assert response.max_events == MAX_SYNC_EVENTS > MAX_SYNC_BATCH
    assert response.max_request_bytes == settings.max_body_bytes


def test_a_batch_larger_than_the_old_limit_is_applied_in_one_sync(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A catch-up batch of MAX_SYNC_EVENTS events is acked and logged in one round trip."""
    events = [
        device_status(agent, seq, f"fridge-{seq % 7}", "online" if seq % 2 else "offline")
        for seq in range(1, MAX_SYNC_EVENTS + 1)
    ]
    assert sync(store, agent, settings, events).acked_seq == MAX_SYNC_EVENTS
    with store.read() as reader:
        assert reader.event_ids(agent.agent_id, [1, MAX_SYNC_EVENTS]) == {
            1: "e-1",
            MAX_SYNC_EVENTS: f"e-{MAX_SYNC_EVENTS}",
        }


def test_equipment_ends_as_the_last_status_of_the_batch_says_and_every_change_is_audited(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """Three statuses of one fridge in a batch: its row shows the last (with the kind the first
    gave), and the audit trail has all three, in order, in a chain that verifies."""
    events = [
        device_status(agent, 1, "fridge-1", "online"),
        device_status(agent, 2, "fridge-1", "offline"),
        device_status(agent, 3, "fridge-1", "online"),
    ]
    sync(store, agent, settings, events)
    with store.read() as reader:
        row = reader.equipment_item("k1", "fridge-1")
        actions = [
            (r["action"], json.loads(r["details_json"])["event_seq"])
            for r in reader.audit_rows()
            if r["subject_type"] == "equipment"
        ]
        verification = audit.verify(reader)
    assert row is not None
    assert (row["kind"], row["health"]) == ("fridge", "ok")
    assert actions == [("device.online", 1), ("device.offline", 2), ("device.online", 3)]
    assert verification.ok and verification.records >= 3


def test_a_batch_of_audit_records_hashes_exactly_as_one_by_one_appends(tmp_path: Path) -> None:
    """audit.Batch and audit.append build the same chain from the same records, including
    strings with quotes and the text '"details":null' itself."""
    records = [
        {
            "at": T0 + n,
            "actor_type": "agent",
            "actor_id": 'a "quoted" agent',
            "action": "device.offline",
            "subject_type": "equipment",
            "subject_id": '"details":null',
            "reason": None if n % 2 else "why",
            "details": {"event_seq": n, "note": '"details":null', "temp": 3.25},
        }
        for n in range(5)
    ]
    one_by_one, batched = Store.open(tmp_path / "a.db"), Store.open(tmp_path / "b.db")
    with one_by_one.write() as tx:
        for record in records:
            audit.append(tx, **record)  # type: ignore[arg-type]
    with batched.write() as tx:
        batch = audit.Batch(tx)
        for record in records:
            batch.append(**record)  # type: ignore[arg-type]
        batch.flush()
        audit.append(tx, **records[0])  # type: ignore[arg-type]
    with one_by_one.write() as tx:
        audit.append(tx, **records[0])  # type: ignore[arg-type]
    with one_by_one.read() as a, batched.read() as b:
        assert [r["hash"] for r in a.audit_rows()] == [r["hash"] for r in b.audit_rows()]
        assert audit.verify(b).ok


def test_the_pacer_advises_nothing_to_a_small_fleet() -> None:
    """Below the budget at the agents' own interval, no advice: agents keep their interval."""
    pacer = fleet.SyncPacer(budget_per_s=100.0)
    advice = [pacer.observe(f"a{n}", now=1000.0 + n * 0.01) for n in range(150)]
    assert set(advice) == {None}


def test_the_pacer_spreads_a_large_fleet_over_its_budget() -> None:
    """1,000 agents on a 100 syncs/s budget are told to sync every 10 s."""
    pacer = fleet.SyncPacer(budget_per_s=100.0, cap_s=30.0)
    advice = [pacer.observe(f"a{n}", now=1000.0 + n * 0.001) for n in range(1000)]
    assert advice[-1] == pytest.approx(10.0)


def test_the_pacer_forgets_agents_that_stopped_syncing() -> None:
    """Agents silent for longer than the window no longer count."""
    pacer = fleet.SyncPacer(budget_per_s=100.0, window_s=60.0)
    for n in range(1000):
        pacer.observe(f"a{n}", now=1000.0)
    assert pacer.observe("a0", now=1000.0 + 61.0) is None


def test_a_restarted_pacer_seeded_with_recent_syncs_paces_at_once() -> None:
    """Seeded with 1,000 agents seen seconds ago (before a restart), the first answer already
    advises 10 s; agents last seen longer ago than the window are not counted."""
    pacer = fleet.SyncPacer(budget_per_s=100.0, window_s=60.0)
    recent = {f"a{n}": 5.0 for n in range(1000)}
    pacer.seed(recent | {f"old{n}": 600.0 for n in range(5000)}, now=1000.0)
    assert pacer.observe("a0", now=1000.0) == pytest.approx(10.0)
