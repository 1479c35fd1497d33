"""The store's group commit over a real SQLite file: batches share a commit, failures stay
their own."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from control_plane.store import Store, Writer
from tests.harness import wait_until


def add_kitchen(kitchen_id: str, *, fail: bool = False) -> object:
    def work(tx: Writer) -> str:
        tx.insert_kitchen(
            kitchen_id=kitchen_id,
            name=kitchen_id,
            timezone="UTC",
            location=None,
            status="active",
            created_at=0.0,
        )
        if fail:
            raise ValueError(f"{kitchen_id} refused")
        return kitchen_id

    return work


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cp.db")


def test_queued_units_commit_together_and_a_failure_is_rolled_back_alone(store: Store) -> None:
    """Three units queued behind the write lock form one batch: the failing one leaves no
    trace and gets its own error, the other two are committed and answered."""
    with ThreadPoolExecutor(3) as pool:
        with store._write_lock:
            futures: list[Future[object]] = [
                pool.submit(store.submit, add_kitchen("k1")),  # type: ignore[arg-type]
                pool.submit(store.submit, add_kitchen("k2", fail=True)),  # type: ignore[arg-type]
                pool.submit(store.submit, add_kitchen("k3")),  # type: ignore[arg-type]
            ]
            wait_until(lambda: len(store._committer._pending) == 3, timeout=10, what="queued")
        results = [f.exception() or f.result() for f in futures]
    with store.read() as reader:
        kitchens = [row["id"] for row in reader.kitchens()]
    assert results[0] == "k1" and results[2] == "k3"
    assert isinstance(results[1], ValueError)
    assert kitchens == ["k1", "k3"]


def test_a_lone_unit_commits_in_the_callers_thread(store: Store) -> None:
    """Without contention a unit is a plain commit run by the caller itself."""
    seen: list[str] = []

    def work(tx: Writer) -> None:
        seen.append(threading.current_thread().name)

    store.submit(work)
    assert seen == [threading.current_thread().name]


def test_a_sync_writes_its_agents_row_in_one_statement_keeping_the_newest_sent_at(
    store: Store,
) -> None:
    """record_sync sets the acked seq, stall count and heartbeat fields together; of two
    heartbeats the newest ``sent_at`` stays, whatever order they are written in."""
    with store.write() as tx:
        add_kitchen("k1")(tx)  # type: ignore[operator]
        tx.insert_agent(
            agent_id="a1",
            kitchen_id="k1",
            name="box",
            credential_hash="h",
            agent_version="1",
            enrolled_at=0.0,
        )
    for sent_at, acked in ((50.0, 4), (40.0, 6)):
        with store.write() as tx:
            statements: list[str] = []
            tx._conn.set_trace_callback(statements.append)
            tx.record_sync(
                agent_id="a1",
                last_acked_seq=acked,
                heartbeat_sent_at=sent_at,
                stalled_first_seq=9,
                stalled_syncs=2,
                last_seen_at=sent_at + 1,
                clock_offset_s=0.5,
                clock_offset_measured_at=sent_at + 1,
                clock_samples=3,
                agent_version="2",
                outbox_depth=7,
                reconnect_json=None,
            )
            tx._conn.set_trace_callback(None)
        assert len(statements) == 1
    with store.read() as reader:
        row = reader.agent("a1")
    assert row is not None
    assert (row["last_acked_seq"], row["last_heartbeat_sent_at"], row["last_seen_at"]) == (
        6,
        50.0,
        41.0,
    )
    assert (row["stalled_first_seq"], row["stalled_syncs"], row["outbox_depth"]) == (9, 2, 7)
    assert (row["clock_offset_s"], row["clock_samples"], row["agent_version"]) == (0.5, 3, "2")
