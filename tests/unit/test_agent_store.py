"""The agent's SQLite store on real files: gap-free seq, atomic start, acks, lease dedupe."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import StoreError
from edge_agent.executor import EventRecord, RunState, StepPhase
from edge_agent.store import MIGRATIONS, Store
from protocol import Lease, RecipeStep


def lease(task_id: str = "t1", fencing_token: int = 1) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id="k1",
        station_id="s1",
        sku_id="pie",
        sku_name="Pie",
        quantity=2,
        order_ids=["o1"],
        steps=[RecipeStep(index=0, name="bake", equipment_kind="oven", duration_s=60)],
        fencing_token=fencing_token,
        start_after=0,
        finish_by=2e9,
        start_by=2e9,
        start_within_s=60,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="boot-a") as opened:
        yield opened


def add(store: Store, item: Lease, deadline: float = 100.0) -> bool:
    return store.add_lease(
        lease=item, received_at=1.0, start_deadline_mono=deadline, not_before_mono=0.0
    )


def test_store_runs_every_named_migration_once_in_wal_with_full_sync(tmp_path: Path) -> None:
    """Opening twice applies each migration once; journal is WAL, synchronous is FULL (2)."""
    Store.open(tmp_path / "agent.db", boot_id="b").close()
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        assert store.migrations_applied() == [name for name, _ in MIGRATIONS]
        conn = store._db.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_outbox_seq_is_gap_free_and_survives_acks_and_reopen(tmp_path: Path) -> None:
    """Seqs go 1, 2, 3...; after acking everything and reopening the next is still last + 1."""
    path = tmp_path / "agent.db"
    with Store.open(path, boot_id="b") as store:
        seqs = [store.append_event(type="x", payload={"n": n}, occurred_at=1.0) for n in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert store.ack_events(up_to_seq=5) == 5
        assert store.outbox_depth() == 0
    with Store.open(path, boot_id="b") as store:
        assert store.append_event(type="x", payload={}, occurred_at=2.0) == 6
        assert store.sequence() == (6, 5)


def test_pending_events_come_in_seq_order_from_the_first_unacked(store: Store) -> None:
    """After acking up to 2, pending starts at 3 and keeps payloads intact."""
    for n in range(4):
        store.append_event(type="x", payload={"n": n}, occurred_at=float(n))
    store.ack_events(up_to_seq=2)
    pending = store.pending_events(limit=10)
    assert [e.seq for e in pending] == [3, 4]
    assert pending[0].payload == {"n": 2}
    assert store.oldest_pending_at() == 2.0


def test_a_stale_or_excessive_ack_never_moves_the_high_water_mark_wrongly(store: Store) -> None:
    """An ack below the mark changes nothing; one above last_seq is clamped to last_seq."""
    for _ in range(3):
        store.append_event(type="x", payload={}, occurred_at=1.0)
    store.ack_events(up_to_seq=2)
    store.ack_events(up_to_seq=1)
    assert store.sequence() == (3, 2)
    store.ack_events(up_to_seq=99)
    assert store.sequence() == (3, 3)
    assert store.append_event(type="x", payload={}, occurred_at=1.0) == 4


def test_a_lease_is_deduplicated_by_task_and_fencing_token(store: Store) -> None:
    """The same (task_id, fencing_token) twice creates one run; a new token is a new lease."""
    assert add(store, lease()) is True
    assert add(store, lease()) is False
    assert add(store, lease(fencing_token=2)) is True
    assert [(t.run.task_id, t.run.fencing_token) for t in store.active_tasks()] == [
        ("t1", 1),
        ("t1", 2),
    ]


def test_task_started_and_the_started_flag_are_written_in_one_transaction(store: Store) -> None:
    """A failing write inside the transaction leaves neither the event nor the flag behind."""
    add(store, lease())
    run = store.active_tasks()[0].run
    started = replace(run, state=RunState.STARTED, started=True, phase=StepPhase.COMMANDED)
    bad_event = EventRecord(type="task.started", payload={"not_json": object()})
    with pytest.raises(TypeError):
        store.apply_transition(
            run=started, events=[bad_event], occurred_at=1.0, expected_state=RunState.LEASED
        )
    assert store.outbox_depth() == 0
    assert store.get_run(task_id="t1", fencing_token=1) == run
    good = EventRecord(type="task.started", payload={"task_id": "t1"})
    seqs = store.apply_transition(
        run=started, events=[good], occurred_at=1.0, expected_state=RunState.LEASED
    )
    assert seqs == [1]
    persisted = store.get_run(task_id="t1", fencing_token=1)
    assert persisted is not None and persisted.started and persisted.state == RunState.STARTED


def test_a_transition_on_a_task_cancelled_meanwhile_writes_nothing(store: Store) -> None:
    """Compare-and-set: the executor cannot start a task the sync loop just cancelled."""
    add(store, lease())
    run = store.active_tasks()[0].run
    assert store.drop_unstarted(task_id="t1", reason="order_cancelled", at=2.0)
    started = replace(run, state=RunState.STARTED, started=True)
    result = store.apply_transition(
        run=started,
        events=[EventRecord(type="task.started", payload={})],
        occurred_at=3.0,
        expected_state=RunState.LEASED,
    )
    assert result is None
    assert store.outbox_depth() == 0
    assert store.active_tasks() == []


def test_the_start_by_deadline_is_rechecked_inside_the_starting_transaction(store: Store) -> None:
    """The deadline passes between decide() and the commit: task.started is not written."""
    add(store, lease(), deadline=100.0)
    run = store.active_tasks()[0].run
    started = replace(run, state=RunState.STARTED, started=True)
    event = EventRecord(type="task.started", payload={})
    late = store.apply_transition(
        run=started,
        events=[event],
        occurred_at=3.0,
        expected_state=RunState.LEASED,
        start_deadline=100.0,
        monotonic=lambda: 100.0,
    )
    assert late is None and store.outbox_depth() == 0
    in_time = store.apply_transition(
        run=started,
        events=[event],
        occurred_at=3.0,
        expected_state=RunState.LEASED,
        start_deadline=100.0,
        monotonic=lambda: 99.9,
    )
    assert in_time == [1]


def test_a_started_task_is_not_dropped_by_a_cancellation(store: Store) -> None:
    """The kitchen is authoritative: cancelling a started task leaves it running."""
    add(store, lease())
    run = store.active_tasks()[0].run
    store.apply_transition(
        run=replace(run, state=RunState.STARTED, started=True),
        events=[],
        occurred_at=1.0,
        expected_state=RunState.LEASED,
    )
    assert store.drop_unstarted(task_id="t1", reason="order_cancelled", at=2.0) == []
    assert [t.run.state for t in store.active_tasks()] == [RunState.STARTED]


def test_deadlines_from_another_boot_are_returned_as_unprovable(tmp_path: Path) -> None:
    """A lease persisted under boot A has no provable start deadline under boot B."""
    path = tmp_path / "agent.db"
    with Store.open(path, boot_id="boot-a") as store:
        add(store, lease(), deadline=123.0)
        assert store.active_tasks()[0].record.start_deadline == 123.0
    with Store.open(path, boot_id="boot-b") as store:
        assert store.active_tasks()[0].record.start_deadline is None


def test_an_unopenable_store_raises_store_error(tmp_path: Path) -> None:
    """A path that is a directory is reported as a StoreError, not a raw sqlite3 error."""
    (tmp_path / "agent.db").mkdir()
    with pytest.raises(StoreError, match=r"agent\.db"):
        Store.open(tmp_path / "agent.db", boot_id="b")


def test_record_sync_keeps_the_last_success_and_the_last_error(store: Store) -> None:
    """A failure after a success keeps last_success_at and records the error text."""
    store.record_sync(at=10.0, ok=True)
    store.record_sync(at=12.0, ok=False, error="unreachable")
    state = store.sync_state()
    assert state["last_success_at"] == "10.0"
    assert state["last_error"] == "unreachable"


@settings(max_examples=100, deadline=None)
@given(
    script=st.lists(
        st.one_of(st.just(("append", 0)), st.tuples(st.just("ack"), st.integers(-3, 40))),
        max_size=40,
    )
)
def test_any_mix_of_appends_and_acks_keeps_seq_gap_free_and_acks_monotonic(
    script: list[tuple[str, int]],
) -> None:
    """Appends number 1, 2, 3... whatever acks (stale, early, too high) come in between."""
    with Store.open(Path(":memory:"), boot_id="b") as store:
        appended: list[int] = []
        acked = 0
        for action, value in script:
            if action == "append":
                appended.append(store.append_event(type="x", payload={}, occurred_at=1.0))
            else:
                store.ack_events(up_to_seq=value)
                last_seq, new_acked = store.sequence()
                assert acked <= new_acked <= last_seq
                acked = new_acked
        assert appended == list(range(1, len(appended) + 1))
        assert [e.seq for e in store.pending_events(limit=100)] == list(
            range(acked + 1, len(appended) + 1)
        )
