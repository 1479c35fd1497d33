"""Read-only queries over the control-plane store (every write lives in :mod:`store`).

A :class:`Reader` wraps one connection inside an open transaction, so a sequence of reads sees one
consistent snapshot; :class:`control_plane.store.Writer` extends it with the writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: Task states that still occupy a station slot (queued or cooking).
OPEN_TASK_STATES = ("planned", "leased", "started")


class CatalogueMemo:
    """What a process derived from the catalogue (kitchens, stations, SKUs) and the operator
    tokens, kept while the store's catalogue version is unchanged.

    Every order read the same kitchens, stations and SKUs (twice: at admission and again in
    the write), and every request its token. Triggers give ``catalogue_version`` a new random
    value in the same transaction as any change to those tables, whoever makes it (this
    process, another server, the control loop, the intake writer). No two states of those
    tables share a version (a change rolled back leaves its version to no one), so a value
    derived in a snapshot of version ``v`` is right for any snapshot that reads ``v``. One
    version is kept at a time, at most ``max_entries`` values of it.

    >>> memo = CatalogueMemo()
    >>> memo.lookup(7, "k", lambda: "built"), memo.lookup(7, "k", lambda: "again")
    ('built', 'built')
    >>> memo.lookup(-3, "k", lambda: "new")
    'new'
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._version: int | None = None
        self._entries: dict[Hashable, Any] = {}

    def lookup(
        self,
        version: int,
        key: Hashable,
        build: Callable[[], T],
        *,
        keep: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """The value of ``key`` at ``version``: the kept one, or ``build()`` (kept if
        ``keep(value)``; a value of another version replaces what was kept)."""
        with self._lock:
            if version == self._version and key in self._entries:
                found: T = self._entries[key]
                return found
        value = build()
        if keep(value):
            with self._lock:
                if version != self._version:
                    self._version, self._entries = version, {}
                if len(self._entries) < self.max_entries:
                    self._entries[key] = value
        return value


class Reader:
    """Queries against one open transaction."""

    def __init__(self, conn: sqlite3.Connection, memo: CatalogueMemo | None = None) -> None:
        self._conn = conn
        self._memo = memo

    def memoized(
        self, key: Hashable, build: Callable[[], T], *, keep: Callable[[T], bool] = lambda _: True
    ) -> T:
        """``build()``, a pure function of the catalogue tables (kitchens, stations, SKUs,
        operator tokens) read in this transaction, or what it gave at the same catalogue
        version (see :class:`CatalogueMemo`); a value ``keep`` refuses is not kept."""
        if self._memo is None:
            return build()
        try:
            row = self._one("SELECT version FROM catalogue_version")
        except sqlite3.OperationalError:  # a store not migrated to 0014 yet: nothing kept
            return build()
        if row is None:
            return build()
        return self._memo.lookup(int(row[0]), key, build, keep=keep)

    def _one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        return list(self._conn.execute(sql, params).fetchall())

    # kitchens, stations, equipment
    def kitchen(self, kitchen_id: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM kitchens WHERE id = ?", (kitchen_id,))

    def kitchens(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM kitchens ORDER BY id")

    def stations(self, kitchen_id: str | None = None) -> list[sqlite3.Row]:
        if kitchen_id is None:
            return self._all("SELECT * FROM stations ORDER BY kitchen_id, id")
        return self._all("SELECT * FROM stations WHERE kitchen_id = ? ORDER BY id", (kitchen_id,))

    def station(self, kitchen_id: str, station_id: str) -> sqlite3.Row | None:
        return self._one(
            "SELECT * FROM stations WHERE kitchen_id = ? AND id = ?", (kitchen_id, station_id)
        )

    def equipment(self, kitchen_id: str) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM equipment WHERE kitchen_id = ? ORDER BY id", (kitchen_id,))

    def equipment_item(self, kitchen_id: str, equipment_id: str) -> sqlite3.Row | None:
        return self._one(
            "SELECT * FROM equipment WHERE kitchen_id = ? AND id = ?", (kitchen_id, equipment_id)
        )

    def station_open_work(self) -> list[sqlite3.Row]:
        """Seconds of open (planned, leased, started) work per kitchen station, as kept up to
        date by the ``open_work_*`` triggers (migration 0004)."""
        # Float sums that go up and down may end a hair below zero.
        return self._all(
            "SELECT kitchen_id, station_id, MAX(open_work_s, 0.0) AS open_work_s"
            " FROM station_open_work"
        )

    def station_in_use(self, kitchen_id: str, station_id: str) -> tuple[int, int]:
        """Open tasks and equipment at a station (a station in use cannot be deleted)."""
        marks = ",".join("?" * len(OPEN_TASK_STATES))
        tasks = self._one(
            "SELECT COUNT(*) AS n FROM prep_tasks WHERE kitchen_id = ? AND station_id = ?"
            f" AND state IN ({marks})",
            (kitchen_id, station_id, *OPEN_TASK_STATES),
        )
        equipment = self._one(
            "SELECT COUNT(*) AS n FROM equipment WHERE kitchen_id = ? AND station_id = ?",
            (kitchen_id, station_id),
        )
        return (
            0 if tasks is None else int(tasks["n"]),
            0 if equipment is None else int(equipment["n"]),
        )

    # skus
    def sku(self, sku_id: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM skus WHERE id = ?", (sku_id,))

    def skus(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM skus ORDER BY id")

    # orders and tasks
    def order(self, order_id: str) -> sqlite3.Row | None:
        return self._one("SELECT rowid AS position, * FROM orders WHERE id = ?", (order_id,))

    def orders(
        self, *, status: str | None, kitchen_id: str | None, limit: int, after_position: int
    ) -> list[sqlite3.Row]:
        clauses: list[str] = ["rowid > ?"]
        params: list[object] = [after_position]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if kitchen_id is not None:
            clauses.append("kitchen_id = ?")
            params.append(kitchen_id)
        return self._all(
            f"SELECT rowid AS position, * FROM orders WHERE {' AND '.join(clauses)}"
            " ORDER BY rowid LIMIT ?",
            [*params, limit],
        )

    def order_items(self, order_id: str) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM order_items WHERE order_id = ? ORDER BY line", (order_id,))

    def tasks_of_order(self, order_id: str) -> list[sqlite3.Row]:
        return self._all(
            "SELECT t.* FROM prep_tasks t JOIN task_orders o ON o.task_id = t.id"
            " WHERE o.order_id = ? ORDER BY t.created_at, t.id",
            (order_id,),
        )

    def task(self, task_id: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM prep_tasks WHERE id = ?", (task_id,))

    def order_ids_of_task(self, task_id: str) -> list[str]:
        rows = self._all(
            "SELECT order_id FROM task_orders WHERE task_id = ? ORDER BY order_id", (task_id,)
        )
        return [str(row["order_id"]) for row in rows]

    def tasks(
        self,
        *,
        kitchen_id: str | None,
        state: str | None,
        order_id: str | None,
        open_leases_of_agents: Sequence[str] | None,
        limit: int,
        after_position: int,
    ) -> list[sqlite3.Row]:
        """Prep tasks in creation order, filtered; ``open_leases_of_agents`` keeps only leased or
        started tasks held by those agents."""
        clauses: list[str] = ["t.rowid > ?"]
        params: list[object] = [after_position]
        if kitchen_id is not None:
            clauses.append("t.kitchen_id = ?")
            params.append(kitchen_id)
        if state is not None:
            clauses.append("t.state = ?")
            params.append(state)
        if order_id is not None:
            clauses.append("t.id IN (SELECT task_id FROM task_orders WHERE order_id = ?)")
            params.append(order_id)
        if open_leases_of_agents is not None:
            marks = ",".join("?" * len(open_leases_of_agents)) or "NULL"
            clauses.append(f"t.state IN ('leased', 'started') AND t.lease_agent_id IN ({marks})")
            params.extend(open_leases_of_agents)
        return self._all(
            f"SELECT t.rowid AS position, t.* FROM prep_tasks t WHERE {' AND '.join(clauses)}"
            " ORDER BY t.rowid LIMIT ?",
            [*params, limit],
        )

    def tasks_leased_to(self, agent_id: str) -> list[sqlite3.Row]:
        """Tasks in state ``leased`` (not yet started) whose lease this agent holds."""
        return self._all(
            "SELECT * FROM prep_tasks WHERE lease_agent_id = ? AND state = 'leased'"
            " ORDER BY start_by, id",
            (agent_id,),
        )

    def leasable_tasks(
        self, *, kitchen_id: str, start_after_until: float, limit: int
    ) -> list[sqlite3.Row]:
        return self._all(
            "SELECT * FROM prep_tasks WHERE kitchen_id = ? AND state = 'planned'"
            " AND start_after <= ? ORDER BY start_after, finish_by, id LIMIT ?",
            (kitchen_id, start_after_until, limit),
        )

    # idempotency
    def idempotency_key(self, scope: str, key: str) -> sqlite3.Row | None:
        """The answer stored under ``key`` by the operator ``scope``."""
        return self._one("SELECT * FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))

    # credentials
    def api_token(self, token_hash: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM api_tokens WHERE token_hash = ?", (token_hash,))

    def count_api_tokens(self) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM api_tokens")
        return 0 if row is None else int(row["n"])

    def enrollment_token(self, token_hash: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM enrollment_tokens WHERE token_hash = ?", (token_hash,))

    def agent(self, agent_id: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM agents WHERE id = ?", (agent_id,))

    def event_ids(self, agent_id: str, seqs: Sequence[int]) -> dict[int, str]:
        """The stored ``event_id`` of each of the agent's ``seqs`` that is stored."""
        found: dict[int, str] = {}
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            for row in self._all(
                f"SELECT seq, event_id FROM events WHERE agent_id = ? AND seq IN ({marks})",
                (agent_id, *chunk),
            ):
                found[int(row["seq"])] = str(row["event_id"])
        return found

    def agent_by_credential(self, credential_hash: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM agents WHERE credential_hash = ?", (credential_hash,))

    def agents(self, *, kitchen_id: str | None = None) -> list[sqlite3.Row]:
        if kitchen_id is None:
            return self._all("SELECT * FROM agents ORDER BY kitchen_id, enrolled_at, id")
        return self._all(
            "SELECT * FROM agents WHERE kitchen_id = ? ORDER BY enrolled_at, id", (kitchen_id,)
        )

    def enrollment_tokens(self, *, kitchen_id: str | None) -> list[sqlite3.Row]:
        if kitchen_id is None:
            return self._all("SELECT * FROM enrollment_tokens ORDER BY created_at, token_hash")
        return self._all(
            "SELECT * FROM enrollment_tokens WHERE kitchen_id = ? ORDER BY created_at, token_hash",
            (kitchen_id,),
        )

    # alerts
    def alert(self, agent_id: str, alert_id: str) -> sqlite3.Row | None:
        return self._one(
            "SELECT rowid AS position, * FROM alerts WHERE agent_id = ? AND alert_id = ?",
            (agent_id, alert_id),
        )

    def alerts(
        self,
        *,
        kitchen_id: str | None,
        acknowledged: bool | None,
        limit: int,
        after_position: int,
        kind: str | None = None,
        resolved: bool | None = None,
    ) -> list[sqlite3.Row]:
        clauses: list[str] = ["rowid > ?"]
        params: list[object] = [after_position]
        if kitchen_id is not None:
            clauses.append("kitchen_id = ?")
            params.append(kitchen_id)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if acknowledged is not None:
            clauses.append(
                "acknowledged_at IS NOT NULL" if acknowledged else "acknowledged_at IS NULL"
            )
        if resolved is not None:
            clauses.append("resolved_at IS NOT NULL" if resolved else "resolved_at IS NULL")
        return self._all(
            f"SELECT rowid AS position, * FROM alerts WHERE {' AND '.join(clauses)}"
            " ORDER BY rowid LIMIT ?",
            [*params, limit],
        )

    # audit
    def last_audit(self) -> sqlite3.Row | None:
        return self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")

    def audit_rows(self, *, after_seq: int = 0, limit: int = 10_000) -> list[sqlite3.Row]:
        return self._all(
            "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )

    def audit_page(
        self,
        *,
        after_seq: int,
        limit: int,
        order_id: str | None = None,
        kitchen_id: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        action: str | None = None,
    ) -> list[sqlite3.Row]:
        clauses: list[str] = ["seq > ?"]
        params: list[object] = [after_seq]
        for column, value in (
            ("order_id", order_id),
            ("kitchen_id", kitchen_id),
            ("subject_type", subject_type),
            ("subject_id", subject_id),
            ("action", action),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return self._all(
            f"SELECT * FROM audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
            [*params, limit],
        )

    def audit_of_order(self, order_id: str) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM audit WHERE order_id = ? ORDER BY seq", (order_id,))

    # stats
    def count_orders_by_status(self) -> list[sqlite3.Row]:
        return self._all("SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY status")

    def count_orders_by_kitchen_status(self) -> list[sqlite3.Row]:
        return self._all(
            "SELECT kitchen_id, status, COUNT(*) AS n FROM orders WHERE kitchen_id IS NOT NULL"
            " GROUP BY kitchen_id, status ORDER BY kitchen_id, status"
        )

    def count_tasks_by_state(self) -> list[sqlite3.Row]:
        return self._all(
            "SELECT state, COUNT(*) AS n FROM prep_tasks GROUP BY state ORDER BY state"
        )

    # -- control loop
    def backpressure_overrides(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM backpressure_overrides ORDER BY scope")

    def backpressure_levels(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM backpressure_levels ORDER BY scope")

    def open_alerts_of_kind(self, kind: str) -> list[sqlite3.Row]:
        """Alerts of ``kind`` not yet resolved (the SLA engine's raised alerts)."""
        return self._all(
            "SELECT * FROM alerts WHERE kind = ? AND resolved_at IS NULL ORDER BY raised_at",
            (kind,),
        )

    def completions(self, *, after_audit_seq: int) -> list[sqlite3.Row]:
        """Tasks completed (audited ``task.done``) after an audit seq, with when they started
        and finished and the seq of that record: the prep-time learner's input and cursor."""
        return self._all(
            "SELECT a.seq AS audit_seq, t.id, t.kitchen_id, t.sku_id, t.started_at,"
            " t.finished_at FROM audit a JOIN prep_tasks t ON t.id = a.subject_id"
            " WHERE a.action = 'task.done' AND a.seq > ? ORDER BY a.seq",
            (after_audit_seq,),
        )

    def open_orders(self) -> list[sqlite3.Row]:
        """Orders accepted and not yet ready, handed over or closed."""
        return self._all(
            "SELECT * FROM orders WHERE status IN ('accepted', 'planned', 'in_prep') ORDER BY id"
        )

    def open_tasks_with_orders(self) -> list[sqlite3.Row]:
        """Tasks that still occupy a slot, each with its order ids (comma-separated)."""
        marks = ",".join("?" * len(OPEN_TASK_STATES))
        return self._all(
            "SELECT t.*, (SELECT GROUP_CONCAT(o.order_id) FROM task_orders o"
            " WHERE o.task_id = t.id) AS order_ids FROM prep_tasks t"
            f" WHERE t.state IN ({marks}) ORDER BY t.id",
            OPEN_TASK_STATES,
        )

    def flagged_tasks(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM prep_tasks WHERE flag_reason IS NOT NULL ORDER BY id")

    def all_equipment(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM equipment ORDER BY kitchen_id, id")

    def kitchen_contact(self, *, now: float) -> list[sqlite3.Row]:
        """Per kitchen with an unrevoked agent that ever synced: ``last_sync_at`` (its agents'
        newest sync), ``outbox_depth`` (summed) and ``ingestion_lag_s``: of its agents that
        report a backlog, the largest age at ``now`` of the newest event applied from it (of
        the last sync, without any event), never negative; ``NULL`` when none reports one.

        One statement, so the control loop does not query each agent's newest event apart."""
        return self._all(
            "SELECT kitchen_id, MAX(last_seen_at) AS last_sync_at,"
            " SUM(outbox_depth) AS outbox_depth,"
            " MAX(CASE WHEN outbox_depth > 0 THEN MAX(? - COALESCE((SELECT e.server_occurred_at"
            " FROM events e WHERE e.agent_id = a.id ORDER BY e.seq DESC LIMIT 1),"
            " last_seen_at), 0.0) END) AS ingestion_lag_s"
            " FROM agents a WHERE NOT revoked AND last_seen_at IS NOT NULL GROUP BY kitchen_id",
            (now,),
        )

    # -- stock and intake planning
    def planning_equipment(self) -> list[sqlite3.Row]:
        """Every kitchen's equipment with its health (capacity for the planner)."""
        return self._all("SELECT kitchen_id, id, kind, station_id, health FROM equipment")

    def booked_intervals(
        self, *, kitchen_id: str, station_id: str, after: float, before: float
    ) -> list[sqlite3.Row]:
        """Slot intervals ``[start_after, planned_finish)`` of the station's open tasks that
        overlap ``[after, before)``, identical intervals counted together (``n``)."""
        # Kept by triggers as tasks change (migration 0013): one row per distinct interval.
        return self._all(
            "SELECT start_after, planned_finish, n FROM station_bookings"
            " WHERE kitchen_id = ? AND station_id = ? AND planned_finish > ? AND start_after < ?",
            (kitchen_id, station_id, after, before),
        )

    def kitchen_stock(self, kitchen_id: str | None = None) -> list[sqlite3.Row]:
        if kitchen_id is None:
            return self._all("SELECT * FROM kitchen_stock ORDER BY kitchen_id, ingredient")
        return self._all(
            "SELECT * FROM kitchen_stock WHERE kitchen_id = ? ORDER BY ingredient", (kitchen_id,)
        )

    def stock_item(self, kitchen_id: str, ingredient: str) -> sqlite3.Row | None:
        return self._one(
            "SELECT * FROM kitchen_stock WHERE kitchen_id = ? AND ingredient = ?",
            (kitchen_id, ingredient),
        )

    def stock_reservations_of_order(self, order_id: str) -> list[sqlite3.Row]:
        return self._all(
            "SELECT * FROM stock_reservations WHERE order_id = ? ORDER BY task_id, ingredient",
            (order_id,),
        )

    def cancelled_unstarted_tasks_holding_stock(
        self, *, agent_id: str, start_by_before: float
    ) -> list[sqlite3.Row]:
        """Cancelled tasks this agent held a lease on, with no start recorded, whose start-by
        passed before ``start_by_before`` and that still hold stock."""
        return self._all(
            "SELECT * FROM prep_tasks t WHERE lease_agent_id = ? AND state = 'cancelled'"
            " AND started_at IS NULL AND start_by IS NOT NULL AND start_by < ?"
            " AND EXISTS (SELECT 1 FROM stock_reservations r WHERE r.task_id = t.id"
            " AND r.released_at IS NULL) ORDER BY start_by, id",
            (agent_id, start_by_before),
        )

    def held_stock_reservations_of_task(self, task_id: str) -> list[sqlite3.Row]:
        """What a task holds now (not released), for every order it serves."""
        return self._all(
            "SELECT * FROM stock_reservations WHERE task_id = ? AND released_at IS NULL"
            " ORDER BY order_id, ingredient",
            (task_id,),
        )

    # -- haccp evidence
    def haccp_evidence(
        self,
        *,
        kitchen_id: str,
        since: float | None,
        until: float | None,
        equipment_id: str | None,
        limit: int,
        after_id: int,
    ) -> list[sqlite3.Row]:
        """A kitchen's HACCP evidence measured in ``[since, until)`` on the control plane's
        timeline (``measured_server_at``: agent clocks may be off), in arrival order."""
        clauses = ["kitchen_id = ?", "id > ?"]
        params: list[object] = [kitchen_id, after_id]
        if since is not None:
            clauses.append("measured_server_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("measured_server_at < ?")
            params.append(until)
        if equipment_id is not None:
            clauses.append("equipment_id = ?")
            params.append(equipment_id)
        return self._all(
            f"SELECT * FROM haccp_evidence WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            [*params, limit],
        )
