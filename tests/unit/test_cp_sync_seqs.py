"""Sync over a real SQLite store: a reused seq is refused, an unrecoverable gap is flagged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from control_plane import auth, catalogue, fleet, reconcile
from control_plane.config import Settings
from control_plane.errors import SeqReused, StateConflict, StoreError
from control_plane.schemas import KitchenCreate
from control_plane.store import Store
from protocol.events import EventEnvelope
from protocol.sync_api import EnrollRequest, Heartbeat, SyncRequest, SyncResponse

T0 = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db")


@pytest.fixture
def store(settings: Settings) -> Store:
    """A store with kitchen k1 and nothing else."""
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


def event(agent: auth.AgentIdentity, seq: int, event_id: str) -> EventEnvelope:
    """A routine telemetry event (stored, not acted on)."""
    return EventEnvelope(
        agent_id=agent.agent_id,
        kitchen_id=agent.kitchen_id,
        seq=seq,
        event_id=event_id,
        type="readings.summary",
        occurred_at=T0,
        payload={},
    )


def sync_at(
    store: Store, agent: auth.AgentIdentity, settings: Settings, now: float, seqs: range, tag: str
) -> SyncResponse:
    request = SyncRequest(
        heartbeat=Heartbeat(agent_version="1", sent_at=now, outbox_depth=len(seqs)),
        events=[event(agent, seq, f"{tag}-{seq}") for seq in seqs],
    )
    response, _stats = reconcile.sync(store, agent, request, now=now, settings=settings)
    return response


def audit_actions(store: Store) -> list[tuple[str, str | None, dict[str, object]]]:
    with store.read() as reader:
        return [
            (row["action"], row["reason"], json.loads(row["details_json"]))
            for row in reader.audit_rows()
        ]


def agent_row(store: Store, agent_id: str) -> sqlite3.Row:
    with store.read() as reader:
        row = reader.agent(agent_id)
    assert row is not None
    return row


def test_a_resent_seq_with_its_event_id_is_a_duplicate(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """The same events sent again are acknowledged again, not refused."""
    sync_at(store, agent, settings, T0, range(1, 4), "a")
    assert sync_at(store, agent, settings, T0 + 1, range(1, 5), "a").acked_seq == 4


def test_a_reused_seq_with_another_event_id_is_refused_and_audited(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """An agent whose seq restarted gets 409 seq_reused; nothing of the batch is applied."""
    sync_at(store, agent, settings, T0, range(1, 4), "old")
    with pytest.raises(SeqReused) as refused:
        sync_at(store, agent, settings, T0 + 1, range(1, 5), "new")
    assert (refused.value.status, refused.value.reason) == (409, "seq_reused")
    assert agent_row(store, agent.agent_id)["last_acked_seq"] == 3
    action, reason, details = audit_actions(store)[-1]
    assert (action, reason, details["first_seq"]) == ("conflict.seq_reused", "seq_reused", 1)


def test_a_gap_the_agent_keeps_sending_is_flagged_once_and_not_skipped(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """Three syncs in a row starting at seq 6 after ack 2: events 3-5 are recorded as
    unrecoverable (audit, agent view), once, and still not acknowledged."""
    sync_at(store, agent, settings, T0, range(1, 3), "a")
    for n in range(4):
        answer = sync_at(store, agent, settings, T0 + 1 + n, range(6, 8), "a")
        assert (answer.acked_seq, answer.resend_from) == (2, 3)
    flagged = [a for a in audit_actions(store) if a[0] == "conflict.events_unrecoverable"]
    assert [(reason, d["from_seq"], d["to_seq"]) for _, reason, d in flagged] == [
        ("events_unrecoverable", 3, 5)
    ]
    view = fleet.agent_view(agent_row(store, agent.agent_id), now=T0 + 5, unreachable_after_s=120)
    assert view["events_unrecoverable"]["from_seq"] == 3


def test_an_accepted_gap_lets_the_agents_later_events_in(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """After an admin accepts the gap, the next sync applies the agent's events again."""
    sync_at(store, agent, settings, T0, range(1, 3), "a")
    with pytest.raises(StateConflict):
        fleet.accept_gap(
            store, agent.agent_id, reason="r", now=T0, actor="admin", unreachable_after_s=120
        )
    for n in range(3):
        sync_at(store, agent, settings, T0 + 1 + n, range(6, 8), "a")
    view = fleet.accept_gap(
        store, agent.agent_id, reason="restored", now=T0 + 5, actor="admin",
        unreachable_after_s=120,
    )  # fmt: skip
    assert (view["last_acked_seq"], view["events_unrecoverable"]) == (5, None)
    assert audit_actions(store)[-1][0] == "agent.gap_accepted"
    assert sync_at(store, agent, settings, T0 + 6, range(6, 8), "a").acked_seq == 7


def test_a_failed_write_that_sqlite_already_rolled_back_keeps_its_error(store: Store) -> None:
    """After SQLite rolled back by itself (e.g. SQLITE_FULL), the original error surfaces."""
    with pytest.raises(StoreError, match="disk is full"), store.write() as tx:
        tx._conn.execute("ROLLBACK")  # what SQLite does on its own for SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")
    with store.write() as tx:  # and the store still works
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
