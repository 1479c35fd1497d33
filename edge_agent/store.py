"""The agent's durable state in one SQLite file: outbox, lease inbox, task runs, sync state.

Every SQL write of the agent lives in this module, each in one transaction. The file runs in
WAL mode with ``synchronous=FULL``: a task start, a step result or an acked event is on disk
before the agent acts on it (SPEC guarantee 10). Routine telemetry, when it arrives, goes
elsewhere with weaker settings; nothing in this file is routine.

Tables (the schema is the documentation of the data):

``outbox``
    Events not yet acknowledged by the control plane, numbered by a gap-free ``seq`` per agent.
    Rows are deleted when acked; ``outbox_sequence`` keeps the high-water marks (``last_seq``,
    ``acked_seq``) so numbering never restarts, even with an empty outbox.
``leases``
    Every lease received, unique by ``(task_id, fencing_token)`` (that is the dedupe), with its
    start-by deadline on the monotonic clock of boot ``boot_id``.
``task_runs``
    Execution state of each leased task (see :class:`edge_agent.executor.TaskRun`).
``sync_state``
    Key/value bookkeeping of the sync loop (last success, last error).

>>> store = Store.open(Path(":memory:"), boot_id="b1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from edge_agent.errors import StoreError
from edge_agent.executor import (
    ACTIVE_STATES,
    EventRecord,
    LeaseRecord,
    RunState,
    StepPhase,
    TaskRun,
)
from protocol import Lease

#: Lanes of the outbox: task facts must never be shed; routine reports may be, under a disk
#: budget. Sync always sends in ``seq`` order whatever the lane.
LANE_TASK = 0
LANE_ROUTINE = 1

Migration = Callable[[sqlite3.Connection], None]


def _m001_outbox(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,          -- gap-free per agent, starts at 1
            event_id TEXT NOT NULL UNIQUE,    -- UUID for cross-system references
            type TEXT NOT NULL,               -- e.g. task.started
            lane INTEGER NOT NULL,            -- 0 task facts, 1 routine
            occurred_at REAL NOT NULL,        -- agent wall clock, unix seconds
            payload TEXT NOT NULL             -- JSON object
        )"""
    )
    conn.execute(
        """CREATE TABLE outbox_sequence (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_seq INTEGER NOT NULL,        -- highest seq ever appended
            acked_seq INTEGER NOT NULL        -- highest seq the control plane acknowledged
        )"""
    )
    conn.execute("INSERT INTO outbox_sequence (id, last_seq, acked_seq) VALUES (1, 0, 0)")


def _m002_leases_and_runs(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE leases (
            task_id TEXT NOT NULL,
            fencing_token INTEGER NOT NULL,
            lease TEXT NOT NULL,                 -- the Lease as received (JSON)
            received_at REAL NOT NULL,           -- agent wall clock
            boot_id TEXT NOT NULL,               -- boot whose monotonic clock the deadlines use
            start_deadline_mono REAL NOT NULL,   -- request send time + start_within_s
            not_before_mono REAL NOT NULL,       -- start_after mapped onto the monotonic clock
            cancelled_reason TEXT,               -- set by a cancellation or a lost lease
            PRIMARY KEY (task_id, fencing_token)
        )"""
    )
    conn.execute(
        """CREATE TABLE task_runs (
            task_id TEXT NOT NULL,
            fencing_token INTEGER NOT NULL,
            state TEXT NOT NULL,                 -- leased/started/done/failed/released/cancelled
            started INTEGER NOT NULL,            -- 1 once task.started is in the outbox
            step INTEGER NOT NULL,               -- index of the current recipe step
            phase TEXT NOT NULL,                 -- pending/commanded/accepted/awaiting_staff
            attempt INTEGER NOT NULL,            -- command attempt of the current step (1-based)
            device_id TEXT,                      -- device serving the current step
            command_issued_at REAL,              -- wall time of the current command's first send
            resends INTEGER NOT NULL,            -- re-sends of the current command id
            updated_at REAL NOT NULL,
            PRIMARY KEY (task_id, fencing_token),
            FOREIGN KEY (task_id, fencing_token) REFERENCES leases (task_id, fencing_token)
        )"""
    )
    conn.execute("CREATE INDEX task_runs_by_state ON task_runs (state)")


def _m003_sync_state(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


#: Named, ordered migrations; append only, never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, Migration], ...] = (
    ("001_outbox", _m001_outbox),
    ("002_leases_and_runs", _m002_leases_and_runs),
    ("003_sync_state", _m003_sync_state),
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One unacknowledged event, ready to become an ``EventEnvelope``."""

    seq: int
    event_id: str
    type: str
    occurred_at: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ActiveTask:
    """A task the executor still works on, with its lease."""

    run: TaskRun
    record: LeaseRecord


class Store:
    """Thread-safe access to the agent's SQLite file; every method is one transaction."""

    def __init__(self, db: sqlite_utils.Database, *, boot_id: str) -> None:
        self._db = db
        self._boot_id = boot_id
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path, *, boot_id: str) -> Store:
        """Open (creating and migrating) the store at ``path``."""
        try:
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open agent store {path}: {exc}") from exc
        store = cls(sqlite_utils.Database(conn), boot_id=boot_id)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            store._migrate()
        except (sqlite3.Error, StoreError) as exc:
            store.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot prepare agent store {path}: {exc}") from exc
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"agent store write failed: {exc}") from exc
                raise

    def _migrate(self) -> None:
        with self._transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
            applied = {row[0] for row in conn.execute("SELECT name FROM migrations")}
            for name, migration in MIGRATIONS:
                if name not in applied:
                    migration(conn)
                    conn.execute(
                        "INSERT INTO migrations (name, applied_at) VALUES (?, datetime('now'))",
                        (name,),
                    )

    def migrations_applied(self) -> list[str]:
        with self._lock:
            return [r["name"] for r in self._db.query("SELECT name FROM migrations ORDER BY name")]

    # -- outbox ----------------------------------------------------------------------------

    def append_event(
        self, *, type: str, payload: dict[str, Any], occurred_at: float, lane: int = LANE_TASK
    ) -> int:
        """Append one event durably and return its ``seq``."""
        with self._transaction() as conn:
            return _append(conn, EventRecord(type=type, payload=payload), occurred_at, lane)

    def pending_events(self, *, limit: int) -> list[OutboxEvent]:
        """Unacknowledged events in ``seq`` order, starting at the first one."""
        with self._lock:
            rows = self._db.query(
                "SELECT seq, event_id, type, occurred_at, payload FROM outbox ORDER BY seq LIMIT ?",
                [limit],
            )
            return [
                OutboxEvent(
                    seq=r["seq"],
                    event_id=r["event_id"],
                    type=r["type"],
                    occurred_at=r["occurred_at"],
                    payload=json.loads(r["payload"]),
                )
                for r in rows
            ]

    def ack_events(self, *, up_to_seq: int) -> int:
        """Forget events up to ``up_to_seq`` (the control plane has them); returns how many.

        An ack below the high-water mark (a stale or replayed answer) changes nothing; one above
        ``last_seq`` is clamped, so a confused server cannot make the agent skip numbers.
        """
        with self._transaction() as conn:
            last_seq, acked_seq = conn.execute(
                "SELECT last_seq, acked_seq FROM outbox_sequence WHERE id = 1"
            ).fetchone()
            new_acked = min(max(up_to_seq, acked_seq), last_seq)
            deleted = conn.execute("DELETE FROM outbox WHERE seq <= ?", (new_acked,)).rowcount
            conn.execute("UPDATE outbox_sequence SET acked_seq = ? WHERE id = 1", (new_acked,))
            return int(deleted)

    def sequence(self) -> tuple[int, int]:
        """``(last_seq, acked_seq)``: the outbox high-water marks."""
        with self._lock:
            row = self._db.execute(
                "SELECT last_seq, acked_seq FROM outbox_sequence WHERE id = 1"
            ).fetchone()
            return int(row[0]), int(row[1])

    def outbox_depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_pending_at(self) -> float | None:
        """Wall time of the oldest unacknowledged event, or ``None`` when the outbox is empty."""
        with self._lock:
            row = self._db.execute("SELECT min(occurred_at) FROM outbox").fetchone()
            return None if row[0] is None else float(row[0])

    # -- leases ----------------------------------------------------------------------------

    def add_lease(
        self,
        *,
        lease: Lease,
        received_at: float,
        start_deadline_mono: float,
        not_before_mono: float,
    ) -> bool:
        """Record a new lease and its task run; ``False`` for a known (task_id, fencing_token)."""
        with self._transaction() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO leases (task_id, fencing_token, lease, received_at, "
                "boot_id, start_deadline_mono, not_before_mono) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    lease.task_id,
                    lease.fencing_token,
                    lease.model_dump_json(),
                    received_at,
                    self._boot_id,
                    start_deadline_mono,
                    not_before_mono,
                ),
            ).rowcount
            if not inserted:
                return False
            _save_run(conn, TaskRun.new(lease), received_at)
            return True

    def drop_unstarted(
        self, *, task_id: str, reason: str, at: float, fencing_token: int | None = None
    ) -> list[TaskRun]:
        """Cancel the never-started run(s) of ``task_id``; returns the runs that were dropped.

        ``fencing_token`` limits it to one lease (a cancellation names it; a lost lease does
        not). A started run is left alone: the kitchen is authoritative about what it cooks.
        """
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT fencing_token FROM task_runs WHERE task_id = ? AND state = ? "
                "AND (? IS NULL OR fencing_token = ?)",
                (task_id, RunState.LEASED.value, fencing_token, fencing_token),
            ).fetchall()
            for (token,) in rows:
                conn.execute(
                    "UPDATE task_runs SET state = ?, updated_at = ? "
                    "WHERE task_id = ? AND fencing_token = ?",
                    (RunState.CANCELLED.value, at, task_id, token),
                )
                conn.execute(
                    "UPDATE leases SET cancelled_reason = ? "
                    "WHERE task_id = ? AND fencing_token = ?",
                    (reason, task_id, token),
                )
            return [
                TaskRun(task_id=task_id, fencing_token=t, state=RunState.CANCELLED) for (t,) in rows
            ]

    def active_tasks(self) -> list[ActiveTask]:
        """Runs the executor still works on, oldest lease first, with their lease records.

        A deadline measured on another boot's monotonic clock cannot be proven, so it is
        returned as ``None`` and the executor releases the (never-started) task.
        """
        placeholders = ",".join("?" for _ in ACTIVE_STATES)
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT r.*, l.lease, l.boot_id, l.start_deadline_mono, l.not_before_mono "
                    "FROM task_runs r JOIN leases l USING (task_id, fencing_token) "
                    f"WHERE r.state IN ({placeholders}) ORDER BY l.received_at, r.task_id",
                    [s.value for s in ACTIVE_STATES],
                )
            )
        tasks = []
        for row in rows:
            same_boot = row["boot_id"] == self._boot_id
            record = LeaseRecord(
                lease=Lease.model_validate_json(row["lease"]),
                start_deadline=row["start_deadline_mono"] if same_boot else None,
                not_before=row["not_before_mono"] if same_boot else 0.0,
            )
            tasks.append(ActiveTask(run=_run_from_row(row), record=record))
        return tasks

    def held_leases(self) -> list[tuple[str, int]]:
        """``(task_id, fencing_token)`` of leases to renew: runs still leased or started."""
        return [(t.run.task_id, t.run.fencing_token) for t in self.active_tasks()]

    def run_counts(self) -> dict[str, int]:
        """Number of task runs by state."""
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM task_runs GROUP BY state")
            return {state: int(count) for state, count in rows.fetchall()}

    def get_run(self, *, task_id: str, fencing_token: int) -> TaskRun | None:
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT * FROM task_runs WHERE task_id = ? AND fencing_token = ?",
                    [task_id, fencing_token],
                )
            )
        return _run_from_row(rows[0]) if rows else None

    def apply_transition(
        self,
        *,
        run: TaskRun,
        events: Sequence[EventRecord],
        occurred_at: float,
        expected_state: RunState,
    ) -> list[int] | None:
        """Persist a run's new state and append its events in ONE transaction.

        This is how ``task.started`` and the ``started`` flag land together: either both are on
        disk or neither is. The write is a compare-and-set on ``expected_state``: if the sync
        loop cancelled the task meanwhile, nothing is written and ``None`` is returned (so no
        command is sent). Otherwise returns the events' ``seq`` numbers.
        """
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state FROM task_runs WHERE task_id = ? AND fencing_token = ?",
                (run.task_id, run.fencing_token),
            ).fetchone()
            if row is None or row[0] != expected_state.value:
                return None
            _save_run(conn, run, occurred_at)
            return [_append(conn, event, occurred_at, LANE_TASK) for event in events]

    # -- sync bookkeeping ------------------------------------------------------------------

    def record_sync(self, *, at: float, ok: bool, error: str | None = None) -> None:
        """Remember the outcome of a sync round trip (``status`` shows it)."""
        with self._transaction() as conn:
            values = {"last_attempt_at": str(at), "last_error": error or ""}
            if ok:
                values["last_success_at"] = str(at)
            for key, value in values.items():
                conn.execute(
                    "INSERT INTO sync_state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def sync_state(self) -> dict[str, str]:
        with self._lock:
            return {r["key"]: r["value"] for r in self._db.query("SELECT * FROM sync_state")}


def _append(conn: sqlite3.Connection, event: EventRecord, occurred_at: float, lane: int) -> int:
    (last_seq,) = conn.execute("SELECT last_seq FROM outbox_sequence WHERE id = 1").fetchone()
    seq = int(last_seq) + 1
    conn.execute(
        "INSERT INTO outbox (seq, event_id, type, lane, occurred_at, payload) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (seq, str(uuid.uuid4()), event.type, lane, occurred_at, json.dumps(event.payload)),
    )
    conn.execute("UPDATE outbox_sequence SET last_seq = ? WHERE id = 1", (seq,))
    return seq


def _save_run(conn: sqlite3.Connection, run: TaskRun, at: float) -> None:
    conn.execute(
        "INSERT INTO task_runs (task_id, fencing_token, state, started, step, phase, attempt, "
        "device_id, command_issued_at, resends, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (task_id, fencing_token) DO UPDATE SET state = excluded.state, "
        "started = excluded.started, step = excluded.step, phase = excluded.phase, "
        "attempt = excluded.attempt, device_id = excluded.device_id, "
        "command_issued_at = excluded.command_issued_at, resends = excluded.resends, "
        "updated_at = excluded.updated_at",
        (
            run.task_id,
            run.fencing_token,
            run.state.value,
            int(run.started),
            run.step,
            run.phase.value,
            run.attempt,
            run.device_id,
            run.command_issued_at,
            run.resends,
            at,
        ),
    )


def _run_from_row(row: dict[str, Any]) -> TaskRun:
    return TaskRun(
        task_id=row["task_id"],
        fencing_token=int(row["fencing_token"]),
        state=RunState(row["state"]),
        started=bool(row["started"]),
        step=int(row["step"]),
        phase=StepPhase(row["phase"]),
        attempt=int(row["attempt"]),
        device_id=row["device_id"],
        command_issued_at=row["command_issued_at"],
        resends=int(row["resends"]),
    )


def read_boot_id() -> str:
    """This boot's id (Linux); monotonic deadlines are only comparable within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # Unknown boot: a fresh id per process makes every persisted deadline unprovable,
        # so never-started leases are released after a restart. Conservative on purpose.
        return f"unknown-{uuid.uuid4()}"
