"""The store's group commit over a real SQLite file: batches share a commit, failures stay
their own."""

from __future__ import annotations

import asyncio
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


def test_units_from_the_event_loop_share_a_transaction_and_fail_alone(store: Store) -> None:
    """Units submitted in one turn of the loop run in one transaction on the loop thread: a
    later unit sees an earlier one's uncommitted row, the failing one leaves no trace and gets
    its own error, and every answer comes after the commit (another connection sees the rows
    by then)."""
    seen: dict[str, object] = {}

    def count_kitchens(tx: Writer) -> int:
        seen["thread"] = threading.current_thread().name
        return len(tx.kitchens())

    async def main() -> list[object]:
        seen["loop_thread"] = threading.current_thread().name
        return list(
            await asyncio.gather(
                store.submit_on_loop(add_kitchen("k1")),  # type: ignore[arg-type]
                store.submit_on_loop(add_kitchen("k2", fail=True)),  # type: ignore[arg-type]
                store.submit_on_loop(count_kitchens),
                store.submit_on_loop(add_kitchen("k3")),  # type: ignore[arg-type]
                return_exceptions=True,
            )
        )

    results = asyncio.run(main())
    other = Store(store.path)
    with other.read() as reader:
        kitchens = [row["id"] for row in reader.kitchens()]
    other.close()
    assert results[0] == "k1" and results[2] == 1 and results[3] == "k3"
    assert isinstance(results[1], ValueError)
    assert seen["thread"] == seen["loop_thread"]
    assert kitchens == ["k1", "k3"]


def test_a_unit_from_the_loop_waits_for_another_writer_without_blocking_the_loop(
    store: Store,
) -> None:
    """While another thread holds the write lock the unit waits and the loop keeps running;
    it commits once the lock is free."""

    async def main() -> tuple[int, object]:
        ticks = 0
        store._write_lock.acquire()
        pending: asyncio.Future[object] = asyncio.ensure_future(
            store.submit_on_loop(add_kitchen("k1"))  # type: ignore[arg-type]
        )
        for _ in range(20):
            await asyncio.sleep(0.005)
            ticks += 1
        assert not pending.done()
        store._write_lock.release()
        return ticks, await asyncio.wait_for(pending, timeout=10)

    ticks, result = asyncio.run(main())
    assert (ticks, result) == (20, "k1")
    with store.read() as reader:
        assert [row["id"] for row in reader.kitchens()] == ["k1"]


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
