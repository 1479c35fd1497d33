"""The audit hash chain over a real SQLite store: append, verify, tamper detection, delays."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from control_plane import audit
from control_plane.errors import StoreError
from control_plane.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A migrated store with three audit records."""
    instance = Store.open(tmp_path / "cp.db")
    with instance.write() as tx:
        for n in range(3):
            audit.append(
                tx,
                at=100.0 + n,
                actor_type="operator",
                actor_id="admin",
                action="order.accepted",
                subject_type="order",
                subject_id=f"o-{n}",
                order_id=f"o-{n}",
                details={"n": n, "note": "café"},
            )
    return instance


def tamper(store: Store, sql: str) -> None:
    """Edit the file directly, as someone bypassing the application would."""
    with sqlite3.connect(store.path) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute(sql)


def verify(store: Store) -> audit.Verification:
    with store.read() as reader:
        return audit.verify(reader, page=2)


def test_intact_chain_verifies(store: Store) -> None:
    """Records appended through the library form a valid chain."""
    result = verify(store)
    assert (result.ok, result.records) == (True, 3)


def test_each_record_links_to_the_previous_hash(store: Store) -> None:
    """``prev_hash`` of each record is the ``hash`` of the one before; the first is genesis."""
    with store.read() as reader:
        rows = reader.audit_rows()
    assert rows[0]["prev_hash"] == audit.GENESIS_HASH
    assert [r["prev_hash"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]


def test_edited_content_breaks_the_chain_at_that_record(store: Store) -> None:
    """Changing a record's details is reported at that record."""
    tamper(store, "UPDATE audit SET details_json = '{\"n\":9}' WHERE seq = 2")
    assert verify(store).broken == audit.BrokenLink(2, "hash does not match the record's content")


def test_deleted_record_breaks_the_chain(store: Store) -> None:
    """Removing a record is reported where the sequence jumps."""
    tamper(store, "DELETE FROM audit WHERE seq = 2")
    broken = verify(store).broken
    assert broken is not None and broken.seq == 3


def test_rehashed_record_still_breaks_the_next_link(store: Store) -> None:
    """Recomputing an edited record's own hash does not help: the next prev_hash differs."""
    with store.read() as reader:
        row = dict(reader.audit_rows()[0])
    record = {name: row[name] for name in audit.HASHED_FIELDS if name != "details"}
    record["actor_id"] = "mallory"
    record["details"] = {"n": 0, "note": "café"}
    forged = audit.record_hash(audit.GENESIS_HASH, record)
    tamper(store, f"UPDATE audit SET actor_id = 'mallory', hash = '{forged}' WHERE seq = 1")
    assert verify(store).broken == audit.BrokenLink(2, "prev_hash does not match the record before")


def test_the_database_refuses_edits_to_audit(store: Store) -> None:
    """Through the application's connection, audit rows cannot be updated."""
    with pytest.raises(StoreError, match="append-only"), store.write() as tx:
        tx._conn.execute("UPDATE audit SET actor_id = 'x' WHERE seq = 1")


def test_late_start_and_late_finish_are_reported_with_reasons() -> None:
    """A start after start_after and a finish after finish_by each become a delay."""
    task = {
        "id": "t1",
        "state": "done",
        "start_after": 0.0,
        "leased_at": 100.0,
        "started_at": 130.0,
        "finish_by": 500.0,
        "finished_at": 560.0,
    }
    delays = audit.task_delays([task], {}, now=1000.0, tolerance_s=1.0)
    assert delays == [
        {"what": "task t1 started late", "reason": "awaiting_lease", "seconds": 130.0},
        {
            "what": "task t1 finished after its finish_by",
            "reason": "finished_after_finish_by",
            "seconds": 60.0,
        },
    ]


def test_delays_within_tolerance_are_not_reported() -> None:
    """A start a fraction of a second after start_after is not a delay."""
    task = {
        "id": "t1",
        "state": "started",
        "start_after": 0.0,
        "leased_at": 0.1,
        "started_at": 0.5,
        "finish_by": 500.0,
        "finished_at": None,
    }
    assert audit.task_delays([task], {"t1": "staff_late"}, now=10.0, tolerance_s=1.0) == []


def test_missed_start_by_and_overdue_open_tasks_are_reported() -> None:
    """A lease whose start-by passed unstarted, and a task open past finish_by, are delays."""
    task = {
        "id": "t1",
        "state": "leased",
        "start_after": 0.0,
        "leased_at": 0.0,
        "start_by": 120.0,
        "started_at": None,
        "finish_by": 500.0,
        "finished_at": None,
    }
    delays = audit.task_delays([task], {}, now=600.0, tolerance_s=1.0)
    assert [(d["reason"], d["seconds"]) for d in delays] == [
        ("start_by_missed", 480.0),
        ("overdue", 100.0),
    ]
