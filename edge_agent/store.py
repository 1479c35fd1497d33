"""The agent's durable state in one SQLite file: outbox (two lanes), lease inbox, task runs,
device registry, HACCP evidence, alerts, sync state.

Every SQL write of the agent lives in this module, each in one transaction. The file runs in
WAL mode with ``synchronous=FULL``: a task start, a step result, an alert is on disk before the
agent acts on it (SPEC guarantee 10). The few writes that skip the fsync are listed under
"What is fsync'd" below, with the reason each is safe.

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
``routine_outbox``
    The routine lane: readings summaries waiting for a ``seq``. See "Two lanes, one seq" below.
``devices``
    The device registry: every device heard on MQTT or serial, its kind, status, health, last
    ``seq`` and how many messages its ``seq`` gaps say the agent missed.
``haccp_readings``
    Food-safety evidence: the actual value, when, which device and probe, why it was kept
    (``interval`` sample, ``excursion``, or a compliance event such as ``probe_silent``), the
    limit, the alert and who acted. Each write also numbers a ``haccp.evidence`` event into
    the outbox (priority lane), so the control plane keeps the same record.
``alerts``
    Local food-safety and equipment alerts, unique by a derived ``alert_id`` so a restarted
    monitor re-raising the same episode records it once.
``store_counters``
    Monotonic counters that must survive restarts (routine events dropped by the disk budget).

What is fsync'd
---------------
Every write that SPEC guarantee 10 covers commits with ``synchronous=FULL`` before the agent
acts on it: leases, task state with its events, alerts with their evidence, device status, and
the promotion of routine events into the outbox (a promoted seq is sent, so losing it would let
another event reuse the number, which the control plane would then drop as a duplicate).
Four kinds of write commit without the fsync (``synchronous=NORMAL``; the next durable commit
fsyncs them too, WAL frames being sequential) because losing them to a power cut is harmless
or documented: acks (the events are re-sent under the same seqs and deduplicated), sync
bookkeeping, device last-seen/seq bookkeeping and routine telemetry summaries (the last flush
interval of readings may be lost: SPEC allows that for routine telemetry, and this says so).

Two lanes, one seq
------------------
The control plane deduplicates by ``(agent_id, seq)`` and acknowledges the highest *contiguous*
``seq`` (``acked_seq``), asking for a resend from the first gap. So a sync batch cannot pick task
events and alerts out of the middle of the outbox and leave older telemetry behind: a skipped
``seq`` is a gap the control plane waits for, and everything after it stays unacknowledged.

The priority lane is therefore made by *when a seq is assigned*, not by reordering sent seqs:

* task events, alerts, HACCP evidence and device status get their ``seq`` the moment they are
  recorded (``outbox``; ``synchronous=FULL``, committed before the agent acts on them);
* routine telemetry summaries wait, unnumbered, in ``routine_outbox``. The sync loop promotes the
  oldest of them into the outbox (assigning the next seqs) only while fewer than one batch
  (:data:`protocol.sync_api.MAX_SYNC_BATCH`) of events is unacknowledged, and only enough to
  fill that batch (:meth:`Store.promote_routine`).

Consequences, all of them intended: every batch is a contiguous run of seqs in order, so acks
stay simple; a backlog of alerts and task events is always sent before any telemetry recorded
alongside it, and at most one batch of (already numbered) telemetry can ever sit in front of a
new alert; and since unnumbered rows carry no seq, the disk budget may compact or drop them
(:meth:`Store.enforce_disk_budget`) without ever creating a gap. A numbered event is only ever
deleted by an ack. Telemetry's place in time is its ``occurred_at``, not its seq.

>>> store = Store.open(Path(":memory:"), boot_id="b1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import StoreError
from edge_agent.executor import (
    ACTIVE_STATES,
    EventRecord,
    LeaseRecord,
    RunState,
    StepPhase,
    TaskRun,
)
from edge_agent.readings import merge_summaries
from edge_agent.safety import Evidence
from protocol import AlertRaised, EventType, Lease
from protocol.events import MAX_EVIDENCE_PER_EVENT
from protocol.sync_api import MAX_SYNC_BATCH

log = logging.getLogger(__name__)

#: ``json.dumps`` with its defaults, without re-checking its keyword arguments on every event.
_JSON = json.JSONEncoder()

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


def _m004_routine_lane(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE routine_outbox (
            id INTEGER PRIMARY KEY,           -- arrival order; no seq until promoted
            type TEXT NOT NULL,               -- e.g. readings.summary
            occurred_at REAL NOT NULL,        -- agent wall clock, unix seconds
            payload TEXT NOT NULL             -- JSON object
        )"""
    )
    conn.execute(
        "CREATE TABLE store_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0)"
    )


def _m005_device_registry(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            link TEXT NOT NULL,               -- mqtt or serial
            kind TEXT,                        -- from birth (mqtt) or configuration (serial)
            model TEXT,
            firmware TEXT,
            status TEXT NOT NULL,             -- online / offline / unknown
            status_changed_at REAL,           -- agent wall clock of the last status change
            last_seen_at REAL,                -- agent wall clock of the last message
            last_seq INTEGER,                 -- highest device seq seen (state/telemetry/event)
            missed_messages INTEGER NOT NULL DEFAULT 0   -- total of the seq gaps seen
        )"""
    )


def _m006_haccp_readings(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE haccp_readings (
            id INTEGER PRIMARY KEY,
            device_id TEXT NOT NULL,
            probe TEXT NOT NULL,              -- metric or probe channel, e.g. core_temp_c
            value_c REAL NOT NULL,            -- the actual value read, degrees Celsius
            measured_at REAL NOT NULL,        -- device time when it gave one, else agent time
            recorded_at REAL NOT NULL,        -- agent wall clock
            reason TEXT NOT NULL,             -- interval (routine evidence) or excursion
            limit_c REAL,                     -- the legal limit the value was checked against
            alert_id TEXT,                    -- the alert this excursion belongs to
            actor TEXT                        -- staff badge of whoever acted on it
        )"""
    )
    conn.execute("CREATE INDEX haccp_by_device_time ON haccp_readings (device_id, measured_at)")


def _m007_alerts(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE alerts (
            alert_id TEXT PRIMARY KEY,        -- derived from kind, device and episode start
            kind TEXT NOT NULL,               -- e.g. cold_holding, cooling_stage_1, probe_silent
            severity TEXT NOT NULL,           -- info / warning / critical
            device_id TEXT,
            message TEXT NOT NULL,
            value REAL,
            limit_value REAL,
            raised_at REAL NOT NULL,          -- agent wall clock
            seq INTEGER NOT NULL,             -- the alert.raised event in the outbox
            cleared_at REAL,                  -- when the condition ended
            corrective_action TEXT,           -- what staff did (reheat, discard, moved...)
            acted_by TEXT                     -- staff badge
        )"""
    )
    conn.execute("CREATE INDEX alerts_open ON alerts (cleared_at)")


def _m008_run_busy_refusals(conn: sqlite3.Connection) -> None:
    # Attempts of the current step refused ``busy``: they do not count toward max_attempts.
    conn.execute("ALTER TABLE task_runs ADD COLUMN busy INTEGER NOT NULL DEFAULT 0")


def _m009_staff_confirmations(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE staff_confirmations (
            task_id TEXT NOT NULL,
            step INTEGER NOT NULL,
            badge TEXT NOT NULL,              -- staff badge from the step_confirmed event
            received_at REAL NOT NULL,        -- agent wall clock
            PRIMARY KEY (task_id, step)
        )"""
    )


def _m010_device_health(conn: sqlite3.Connection) -> None:
    # Health of an online device as last reported (ok / degraded / failed) and why.
    conn.execute("ALTER TABLE devices ADD COLUMN health TEXT")
    conn.execute("ALTER TABLE devices ADD COLUMN health_reason TEXT")


#: Named, ordered migrations; append only, never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, Migration], ...] = (
    ("001_outbox", _m001_outbox),
    ("002_leases_and_runs", _m002_leases_and_runs),
    ("003_sync_state", _m003_sync_state),
    ("004_routine_lane", _m004_routine_lane),
    ("005_device_registry", _m005_device_registry),
    ("006_haccp_readings", _m006_haccp_readings),
    ("007_alerts", _m007_alerts),
    ("008_run_busy_refusals", _m008_run_busy_refusals),
    ("009_staff_confirmations", _m009_staff_confirmations),
    ("010_device_health", _m010_device_health),
)

#: Counter names in ``store_counters``.
COUNTER_ROUTINE_DROPPED = "routine_dropped"
COUNTER_ROUTINE_COMPACTED = "routine_compacted"
#: The control plane acked a seq above the highest one the agent sent it (clamped).
COUNTER_ACK_ABOVE_SENT = "ack_above_sent"
#: The control plane asked for a resend from a seq the agent had already deleted as acked.
COUNTER_RESEND_BELOW_ACKED = "resend_below_acked"


class Connection:
    """The two read helpers the store needs over a ``sqlite3`` connection.

    (sqlite-utils' ``Database`` offered the same, but importing it cost the agent 15 MB of
    resident memory, a quarter of its 60 MB budget on a kitchen box, for two methods.)
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cursor = self.conn.execute(sql, tuple(params))
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One unacknowledged event, ready to become an ``EventEnvelope``."""

    seq: int
    event_id: str
    type: str
    occurred_at: float
    payload: dict[str, Any]
    #: Size of the stored payload JSON, so a sync batch can be bounded in bytes.
    payload_bytes: int = 0


@dataclass(frozen=True, slots=True)
class DeviceActivity:
    """What the ingest loop saw of one device since its last flush."""

    device_id: str
    link: str
    seen_at: float
    last_seq: int | None = None
    #: Messages the device numbered but the agent never received (seq gaps).
    missed: int = 0


@dataclass(frozen=True, slots=True)
class ActiveTask:
    """A task the executor still works on, with its lease."""

    run: TaskRun
    record: LeaseRecord


class Store:
    """Thread-safe access to the agent's SQLite file; every method is one transaction."""

    def __init__(self, db: Connection, *, boot_id: str) -> None:
        self._db = db
        self._boot_id = boot_id
        self._lock = threading.RLock()
        self._over_budget_logged = False

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
        store = cls(Connection(conn), boot_id=boot_id)
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
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False`` commits without the fsync (WAL
        ``synchronous=NORMAL``): only for writes whose loss to a power cut is harmless (see
        "What is fsync'd" in the module docstring); the next durable commit fsyncs them too."""
        with self._lock:
            conn = self._db.conn
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
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
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

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

    def append_events(self, *, events: Sequence[EventRecord], occurred_at: float) -> list[int]:
        """Append several events in ONE durable transaction (group commit); returns their seqs.

        One fsync for the whole batch: nothing in it is acknowledged or acted on before the
        commit returns, which is what SPEC guarantee 10 asks of a group commit.
        """
        if not events:
            return []
        with self._transaction() as conn:
            (last_seq,) = conn.execute(
                "SELECT last_seq FROM outbox_sequence WHERE id = 1"
            ).fetchone()
            first = int(last_seq) + 1
            encode = _JSON.encode
            conn.executemany(
                "INSERT INTO outbox (seq, event_id, type, lane, occurred_at, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (first + n, event_id, e.type, LANE_TASK, occurred_at, encode(e.payload))
                    for (n, e), event_id in zip(
                        enumerate(events), new_event_ids(len(events)), strict=True
                    )
                ],
            )
            last = first + len(events) - 1
            conn.execute("UPDATE outbox_sequence SET last_seq = ? WHERE id = 1", (last,))
            return list(range(first, last + 1))

    def pending_events(self, *, limit: int, after_seq: int = 0) -> list[OutboxEvent]:
        """Unacknowledged events in ``seq`` order, starting at the first one (or the first after
        ``after_seq``: the sync loop reads the next batch while one is in flight)."""
        with self._lock:
            rows = self._db.query(
                "SELECT seq, event_id, type, occurred_at, payload FROM outbox WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                [after_seq, limit],
            )
            return [
                OutboxEvent(
                    seq=r["seq"],
                    event_id=r["event_id"],
                    type=r["type"],
                    occurred_at=r["occurred_at"],
                    payload=json.loads(r["payload"]),
                    payload_bytes=len(r["payload"].encode()),
                )
                for r in rows
            ]

    def ack_events(self, *, up_to_seq: int, sent_up_to: int | None = None) -> int:
        """Forget events up to ``up_to_seq`` (the control plane has them); returns how many.

        An ack below the high-water mark (a stale or replayed answer) changes nothing; one above
        ``sent_up_to`` (the highest seq sent in the request it answers) or ``last_seq`` is
        clamped and counted (``ack_above_sent``): a restored or reset control plane cannot make
        the agent delete events it never sent.
        Not fsync'd: an ack lost to a power cut only makes the agent send those events again,
        under the same seqs, and the control plane deduplicates them.
        """
        with self._transaction(durable=False) as conn:
            last_seq, acked_seq = conn.execute(
                "SELECT last_seq, acked_seq FROM outbox_sequence WHERE id = 1"
            ).fetchone()
            limit = last_seq if sent_up_to is None else min(last_seq, max(sent_up_to, acked_seq))
            if up_to_seq > limit:
                _bump(conn, COUNTER_ACK_ABOVE_SENT, 1)
            new_acked = min(max(up_to_seq, acked_seq), limit)
            deleted = conn.execute("DELETE FROM outbox WHERE seq <= ?", (new_acked,)).rowcount
            conn.execute("UPDATE outbox_sequence SET acked_seq = ? WHERE id = 1", (new_acked,))
            return int(deleted)

    def count(self, name: str, by: int = 1) -> None:
        """Add ``by`` to the persistent counter ``name`` (see :meth:`counters`)."""
        with self._transaction(durable=False) as conn:
            _bump(conn, name, by)

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
        start_deadline: float | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> list[int] | None:
        """Persist a run's new state and append its events in ONE transaction.

        This is how ``task.started`` and the ``started`` flag land together: either both are on
        disk or neither is. The write is a compare-and-set on ``expected_state``: if the sync
        loop cancelled the task meanwhile, nothing is written and ``None`` is returned (so no
        command is sent). Otherwise returns the events' ``seq`` numbers.

        A transition that starts the task (``run.started`` from ``leased``) given ``monotonic``
        re-reads that clock inside the transaction (after any wait for the database lock) and
        writes nothing when ``start_deadline`` has passed meanwhile (or is unknown).
        """
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state FROM task_runs WHERE task_id = ? AND fencing_token = ?",
                (run.task_id, run.fencing_token),
            ).fetchone()
            if row is None or row[0] != expected_state.value:
                return None
            starting = run.started and expected_state == RunState.LEASED
            if (
                starting
                and monotonic is not None
                and (start_deadline is None or monotonic() >= start_deadline)
            ):
                return None
            _save_run(conn, run, occurred_at)
            return [_append(conn, event, occurred_at, LANE_TASK) for event in events]

    def record_confirmation(self, *, task_id: str, step: int, badge: str, at: float) -> None:
        """Durably keep a staff ``step_confirmed`` (before the MQTT message is acknowledged);
        the first confirmation of a step wins, re-deliveries change nothing."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO staff_confirmations (task_id, step, badge, received_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (task_id, step) DO NOTHING",
                (task_id, step, badge, at),
            )

    def confirmation(self, *, task_id: str, step: int) -> str | None:
        """The badge that confirmed ``step`` of ``task_id``, if any confirmation arrived."""
        with self._lock:
            row = self._db.execute(
                "SELECT badge FROM staff_confirmations WHERE task_id = ? AND step = ?",
                (task_id, step),
            ).fetchone()
        return None if row is None else str(row[0])

    # -- routine lane and disk budget ------------------------------------------------------

    def append_routine(self, *, events: Sequence[EventRecord], occurred_at: float) -> int:
        """Queue routine events (telemetry summaries) unnumbered, in one transaction.

        Callers batch them (group commit), so a power cut may lose the last batch of routine
        readings; that is the one weaker durability the agent has, and only for telemetry.
        """
        if not events:
            return 0
        with self._transaction(durable=False) as conn:
            conn.executemany(
                "INSERT INTO routine_outbox (type, occurred_at, payload) VALUES (?, ?, ?)",
                [(e.type, occurred_at, json.dumps(e.payload)) for e in events],
            )
            return len(events)

    def promote_routine(self, *, max_unacked: int = MAX_SYNC_BATCH) -> int:
        """Number the oldest routine events into the outbox while it holds < ``max_unacked``.

        Returns how many were promoted. Called by the sync loop just before it builds a batch,
        so telemetry fills what room the next batch has after every task event and alert.
        """
        with self._transaction() as conn:
            (depth,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
            room = max_unacked - int(depth)
            if room <= 0:
                return 0
            rows = conn.execute(
                "SELECT id, type, occurred_at, payload FROM routine_outbox ORDER BY id LIMIT ?",
                (room,),
            ).fetchall()
            for _id, type_, occurred_at, payload in rows:
                _append_raw(conn, type_, payload, occurred_at, LANE_ROUTINE)
            if rows:
                conn.execute("DELETE FROM routine_outbox WHERE id <= ?", (rows[-1][0],))
            return len(rows)

    def routine_depth(self) -> int:
        """Routine events waiting for a seq."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM routine_outbox").fetchone()[0])

    def used_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded: SQLite reuses them)."""
        with self._lock:
            conn = self._db.conn
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            return int((pages - free) * page_size)

    def enforce_disk_budget(self, *, budget_bytes: int, chunk: int = 512) -> int:
        """Compact, then drop, the oldest routine events until the store uses <= 90 % of budget.

        Oldest first, ``chunk`` rows at a time: summaries of the same device and metric in the
        chunk are merged into one (:func:`edge_agent.readings.merge_summaries`: the history
        keeps its min, max, mean and count at a coarser resolution) and counted as
        ``routine_compacted``; a chunk with nothing to merge is dropped, counted as
        ``routine_dropped``. Returns how many rows were compacted away or dropped. Only
        unnumbered routine rows are touched: task events, alerts, device status and HACCP
        evidence are kept whatever the budget says, and recording them never fails because of
        it. The 10 % margin keeps the store from working on every flush.
        """
        if self.used_bytes() <= budget_bytes:
            self._over_budget_logged = False
            return 0
        target = int(budget_bytes * 0.9)
        removed_total = 0
        dropped_total = 0
        while self.used_bytes() > target:
            with self._transaction(durable=False) as conn:
                rows = conn.execute(
                    "SELECT id, type, payload FROM routine_outbox ORDER BY id LIMIT ?", (chunk,)
                ).fetchall()
                keep, merged_away = compact_routine(rows)
                if merged_away:
                    conn.executemany(
                        "UPDATE routine_outbox SET payload = ? WHERE id = ?",
                        [(payload, row_id) for row_id, payload in keep],
                    )
                    conn.executemany(
                        "DELETE FROM routine_outbox WHERE id = ?", [(i,) for i in merged_away]
                    )
                    _bump(conn, COUNTER_ROUTINE_COMPACTED, len(merged_away))
                    removed = len(merged_away)
                else:
                    removed = conn.execute(
                        "DELETE FROM routine_outbox WHERE id IN "
                        "(SELECT id FROM routine_outbox ORDER BY id LIMIT ?)",
                        (chunk,),
                    ).rowcount
                    if removed:
                        _bump(conn, COUNTER_ROUTINE_DROPPED, removed)
                        dropped_total += int(removed)
            if not removed:
                if not self._over_budget_logged:
                    self._over_budget_logged = True  # once per episode, not on every flush
                    log.warning(
                        "disk budget exceeded by events that are never dropped",
                        extra={"budget_bytes": budget_bytes, "used_bytes": self.used_bytes()},
                    )
                break
            removed_total += int(removed)
        if removed_total:
            log.warning(
                "disk budget reached: compacted or dropped the oldest routine telemetry",
                extra={
                    "removed": removed_total,
                    "dropped": dropped_total,
                    "budget_bytes": budget_bytes,
                },
            )
        return removed_total

    def counters(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM store_counters").fetchall()
            return {name: int(value) for name, value in rows}

    # -- device registry --------------------------------------------------------------------

    def record_birth(
        self, *, device_id: str, link: str, kind: str | None, model: str, firmware: str, at: float
    ) -> None:
        """Remember what a device is (from its retained ``birth``)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO devices (device_id, link, kind, model, firmware, status, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?, 'unknown', ?) ON CONFLICT (device_id) DO UPDATE SET "
                "link = excluded.link, kind = excluded.kind, model = excluded.model, "
                "firmware = excluded.firmware, last_seen_at = excluded.last_seen_at",
                (device_id, link, kind, model, firmware, at),
            )

    def record_device_status(
        self, *, device_id: str, link: str, status: str, at: float, kind: str | None = None
    ) -> int | None:
        """Record ``online``/``offline``; on a change, append ``device.status`` in the same
        transaction and return its seq (``None`` when nothing changed: retained repeats)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, kind FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is not None and row[0] == status:
                return None
            known_kind = kind or (row[1] if row is not None else None)
            conn.execute(
                "INSERT INTO devices (device_id, link, kind, status, status_changed_at, "
                "last_seen_at, health, health_reason) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (device_id) DO UPDATE SET "
                "status = excluded.status, status_changed_at = excluded.status_changed_at, "
                "kind = coalesce(excluded.kind, devices.kind), "
                "last_seen_at = excluded.last_seen_at, health = excluded.health, "
                "health_reason = NULL",
                (device_id, link, known_kind, status, at, at, "ok" if status == "online" else None),
            )
            payload: dict[str, Any] = {"device_id": device_id, "status": status}
            if known_kind is not None:
                payload["kind"] = known_kind
            return _append(conn, EventRecord(type="device.status", payload=payload), at, LANE_TASK)

    def record_device_health(
        self, *, device_id: str, health: str, reason: str | None, at: float
    ) -> int | None:
        """An online device's health changed (:mod:`edge_agent.health`): keep it and append
        ``device.status`` with ``health`` and ``reason`` in one transaction; returns the seq,
        ``None`` when the device is not known online or its health is already that."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, kind, health FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is None or row[0] != "online" or row[2] == health:
                return None
            conn.execute(
                "UPDATE devices SET health = ?, health_reason = ? WHERE device_id = ?",
                (health, reason, device_id),
            )
            payload: dict[str, Any] = {"device_id": device_id, "status": "online", "health": health}
            if row[1] is not None:
                payload["kind"] = row[1]
            if reason is not None:
                payload["reason"] = reason
            return _append(conn, EventRecord(type="device.status", payload=payload), at, LANE_TASK)

    def record_device_activity(self, *, seen: Sequence[DeviceActivity]) -> None:
        """Batch-update last seen time, last seq and missed messages (from seq gaps); routine
        bookkeeping, not fsync'd."""
        if not seen:
            return
        with self._transaction(durable=False) as conn:
            for item in seen:
                conn.execute(
                    "INSERT INTO devices (device_id, link, status, last_seen_at, last_seq, "
                    "missed_messages) VALUES (?, ?, 'unknown', ?, ?, ?) "
                    "ON CONFLICT (device_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, "
                    "last_seq = coalesce(excluded.last_seq, devices.last_seq), "
                    "missed_messages = devices.missed_messages + excluded.missed_messages",
                    (item.device_id, item.link, item.seen_at, item.last_seq, item.missed),
                )

    def devices(self) -> list[dict[str, Any]]:
        """The device registry, one dict per device, by id."""
        with self._lock:
            return list(self._db.query("SELECT * FROM devices ORDER BY device_id"))

    # -- food safety: evidence and alerts ----------------------------------------------------

    def record_evidence(self, *, readings: Sequence[Evidence], at: float) -> int:
        """Keep HACCP evidence readings (interval samples, excursions) in one transaction."""
        if not readings:
            return 0
        with self._transaction() as conn:
            _insert_evidence(conn, readings, at)
            return len(readings)

    def raise_alert(
        self, *, alert: AlertRaised, at: float, evidence: Sequence[Evidence] = ()
    ) -> int | None:
        """Record an alert, its ``alert.raised`` event and its evidence in ONE transaction.

        Durable (``synchronous=FULL``) before the caller tells anyone. Idempotent by
        ``alert_id``: a repeat (a restarted monitor re-deriving the same episode) records
        nothing and returns ``None``; otherwise returns the event's seq.
        """
        with self._transaction() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, kind, severity, device_id, message, "
                "value, limit_value, raised_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    alert.alert_id,
                    alert.kind,
                    alert.severity,
                    alert.device_id,
                    alert.message,
                    alert.value,
                    alert.limit,
                    at,
                ),
            ).rowcount
            if not inserted:
                return None
            record = EventRecord(
                type="alert.raised", payload=alert.model_dump(mode="json", exclude_none=True)
            )
            seq = _append(conn, record, at, LANE_TASK)
            conn.execute("UPDATE alerts SET seq = ? WHERE alert_id = ?", (seq, alert.alert_id))
            _insert_evidence(conn, evidence, at)
            return seq

    def clear_alert(self, *, alert_id: str, at: float) -> int | None:
        """The alert's condition is over: mark it and append ``alert.resolved``
        (``condition_cleared``) in one transaction; returns the seq, ``None`` if it was not open.
        """
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE alerts SET cleared_at = ? WHERE alert_id = ? AND cleared_at IS NULL",
                (at, alert_id),
            ).rowcount
            if not changed:
                return None
            payload = {"alert_id": alert_id, "reason": "condition_cleared"}
            return _append(conn, EventRecord(type="alert.resolved", payload=payload), at, LANE_TASK)

    def record_corrective_action(
        self, *, alert_id: str, action: str, acted_by: str | None, at: float
    ) -> int | None:
        """Staff acted on an alert (reheated, discarded, moved the food): recorded on the alert
        and on its HACCP evidence, with an ``alert.resolved`` (``corrective_action``) event, in
        one transaction. Returns the seq, or ``None`` for an unknown alert."""
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE alerts SET corrective_action = ?, acted_by = ? WHERE alert_id = ?",
                (action, acted_by, alert_id),
            ).rowcount
            if not changed:
                return None
            conn.execute(
                "UPDATE haccp_readings SET actor = ? WHERE alert_id = ? AND actor IS NULL",
                (acted_by, alert_id),
            )
            payload: dict[str, Any] = {
                "alert_id": alert_id,
                "reason": "corrective_action",
                "corrective_action": action,
            }
            if acted_by is not None:
                payload["acted_by"] = acted_by
            return _append(conn, EventRecord(type="alert.resolved", payload=payload), at, LANE_TASK)

    def alerts(self, *, open_only: bool = False) -> list[dict[str, Any]]:
        where = "WHERE cleared_at IS NULL " if open_only else ""
        with self._lock:
            return list(self._db.query(f"SELECT * FROM alerts {where}ORDER BY raised_at"))

    def evidence(self, *, device_id: str | None = None) -> list[Evidence]:
        with self._lock:
            rows = self._db.query(
                "SELECT * FROM haccp_readings WHERE (? IS NULL OR device_id = ?) ORDER BY id",
                [device_id, device_id],
            )
            return [
                Evidence(
                    device_id=r["device_id"],
                    probe=r["probe"],
                    value_c=r["value_c"],
                    measured_at=r["measured_at"],
                    reason=r["reason"],
                    limit_c=r["limit_c"],
                    alert_id=r["alert_id"],
                    actor=r["actor"],
                )
                for r in rows
            ]

    # -- sync bookkeeping ------------------------------------------------------------------

    def record_sync(self, *, at: float, ok: bool, error: str | None = None) -> None:
        """Remember the outcome of a sync round trip (``status`` shows it); bookkeeping, so
        not fsync'd."""
        with self._transaction(durable=False) as conn:
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
    return _append_raw(conn, event.type, _JSON.encode(event.payload), occurred_at, lane)


def _append_raw(
    conn: sqlite3.Connection, type_: str, payload: str, occurred_at: float, lane: int
) -> int:
    (last_seq,) = conn.execute("SELECT last_seq FROM outbox_sequence WHERE id = 1").fetchone()
    seq = int(last_seq) + 1
    conn.execute(
        "INSERT INTO outbox (seq, event_id, type, lane, occurred_at, payload) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (seq, new_event_id(), type_, lane, occurred_at, payload),
    )
    conn.execute("UPDATE outbox_sequence SET last_seq = ? WHERE id = 1", (seq,))
    return seq


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits.

    Time-ordered ids land at the right edge of the ``event_id`` index instead of on random
    pages, so a group commit of a thousand events writes (and fsyncs) a few pages, not hundreds.
    """
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10)) & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_event_ids(count: int) -> list[str]:
    """``count`` UUIDv7s for one group commit: one clock read and one random draw for the
    batch, then RFC 9562's monotonic counter (method 2: ``rand_b`` incremented per id).

    The ids are unique (a 62-bit random start per batch, counted up) and time-ordered like
    :func:`new_event_id`'s, in batch order; formatting them is a third of the cost of drawing
    each one on its own, which a thousand-event commit feels.

    >>> a, b = new_event_ids(2)
    >>> a[:19] == b[:19] and int(b[19:].replace("-", ""), 16) - int(a[19:].replace("-", ""), 16)
    1
    """
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10))
    head = (millis & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | random >> 68  # version 7, rand_a
    prefix = f"{head:016x}"
    prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:]}-"
    # Start low enough in the 62 bits that counting up never carries into the variant bits.
    start = (random & ((1 << 62) - 1)) % ((1 << 62) - count)
    variant = 0x2 << 62
    ids = []
    for n in range(count):
        tail = f"{variant | (start + n):016x}"
        ids.append(f"{prefix}{tail[:4]}-{tail[4:]}")
    return ids


def compact_routine(
    rows: Sequence[tuple[int, str, str]],
) -> tuple[list[tuple[int, str]], list[int]]:
    """Merge the ``readings.summary`` rows of one device and metric among ``rows``.

    Returns ``(kept, merged_away)``: the surviving row id of each group with its merged payload
    (the oldest id, so order by id still means oldest first), and the ids merged into it.
    """
    groups: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for row_id, type_, payload in rows:
        if type_ != "readings.summary":
            continue
        body = json.loads(payload)
        key = (str(body.get("device_id")), str(body.get("metric")))
        groups.setdefault(key, []).append((row_id, body))
    kept: list[tuple[int, str]] = []
    merged_away: list[int] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        kept.append((members[0][0], json.dumps(merge_summaries([b for _, b in members]))))
        merged_away += [row_id for row_id, _ in members[1:]]
    return kept, merged_away


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    conn.execute(
        "INSERT INTO store_counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        (name, by),
    )


def _insert_evidence(conn: sqlite3.Connection, readings: Sequence[Evidence], at: float) -> None:
    """Keep ``readings`` in ``haccp_readings`` and number them into the outbox as
    ``haccp.evidence`` events (priority lane) in the caller's durable transaction: evidence
    reaches the control plane like an alert does and no disk budget can drop it."""
    if not readings:
        return
    for start in range(0, len(readings), MAX_EVIDENCE_PER_EVENT):
        chunk = readings[start : start + MAX_EVIDENCE_PER_EVENT]
        payload = {"readings": [_evidence_payload(r) for r in chunk]}
        _append(
            conn, EventRecord(type=EventType.HACCP_EVIDENCE.value, payload=payload), at, LANE_TASK
        )
    conn.executemany(
        "INSERT INTO haccp_readings (device_id, probe, value_c, measured_at, recorded_at, "
        "reason, limit_c, alert_id, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.device_id,
                r.probe,
                r.value_c,
                r.measured_at,
                at,
                r.reason,
                r.limit_c,
                r.alert_id,
                r.actor,
            )
            for r in readings
        ],
    )


def _evidence_payload(reading: Evidence) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "device_id": reading.device_id,
        "probe": reading.probe,
        "value_c": reading.value_c,
        "measured_at": reading.measured_at,
        "reason": reading.reason,
    }
    if reading.limit_c is not None:
        payload["limit_c"] = reading.limit_c
    if reading.alert_id is not None:
        payload["alert_id"] = reading.alert_id
    if reading.actor is not None:
        payload["actor"] = reading.actor
    return payload


def _save_run(conn: sqlite3.Connection, run: TaskRun, at: float) -> None:
    conn.execute(
        "INSERT INTO task_runs (task_id, fencing_token, state, started, step, phase, attempt, "
        "device_id, command_issued_at, resends, busy, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (task_id, fencing_token) DO UPDATE SET state = excluded.state, "
        "started = excluded.started, step = excluded.step, phase = excluded.phase, "
        "attempt = excluded.attempt, device_id = excluded.device_id, "
        "command_issued_at = excluded.command_issued_at, resends = excluded.resends, "
        "busy = excluded.busy, updated_at = excluded.updated_at",
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
            run.busy,
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
        busy=int(row["busy"]),
    )


def read_boot_id() -> str:
    """This boot's id (Linux); monotonic deadlines are only comparable within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # Unknown boot: a fresh id per process makes every persisted deadline unprovable,
        # so never-started leases are released after a restart. Conservative on purpose.
        return f"unknown-{uuid.uuid4()}"
