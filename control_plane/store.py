"""The control plane's SQLite store: connections, named migrations, and every SQL write.

Durability (SPEC guarantee 10): WAL mode with ``synchronous=FULL``, so a committed transaction
is fsync'd before :meth:`Store.write` returns and before any answer is sent. Writes are serialised
by one process-wide lock (SQLite allows one writer anyway; the lock avoids busy-wait polling),
reads run concurrently on one connection per thread.

>>> store = Store.open(Path(tmp) / "cp.db")            # doctest: +SKIP
>>> with store.write() as tx:                           # doctest: +SKIP
...     tx.insert_kitchen(kitchen_id="k1", name="K1", timezone="UTC", location=None,
...                       status="active", created_at=0.0)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from control_plane.errors import StoreError
from control_plane.migrations import MIGRATIONS
from control_plane.queries import CatalogueMemo, Reader


class Writer(Reader):
    """Every SQL write of the control plane, inside one open write transaction."""

    def _exec(self, sql: str, params: tuple[object, ...]) -> int:
        return self._conn.execute(sql, params).rowcount

    # kitchens, stations, equipment
    def insert_kitchen(
        self,
        *,
        kitchen_id: str,
        name: str,
        timezone: str,
        location: str | None,
        status: str,
        created_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO kitchens (id, name, timezone, location, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kitchen_id, name, timezone, location, status, created_at),
        )

    def insert_station(self, *, kitchen_id: str, station_id: str, name: str, slots: int) -> None:
        self._exec(
            "INSERT INTO stations (kitchen_id, id, name, slots) VALUES (?, ?, ?, ?)",
            (kitchen_id, station_id, name, slots),
        )

    def set_kitchen_status(self, *, kitchen_id: str, status: str) -> None:
        self._exec("UPDATE kitchens SET status = ? WHERE id = ?", (status, kitchen_id))

    def update_station(self, *, kitchen_id: str, station_id: str, name: str, slots: int) -> None:
        self._exec(
            "UPDATE stations SET name = ?, slots = ? WHERE kitchen_id = ? AND id = ?",
            (name, slots, kitchen_id, station_id),
        )

    def delete_station(self, *, kitchen_id: str, station_id: str) -> None:
        self._exec("DELETE FROM stations WHERE kitchen_id = ? AND id = ?", (kitchen_id, station_id))

    def update_equipment(
        self, *, kitchen_id: str, equipment_id: str, station_id: str | None, updated_at: float
    ) -> None:
        """Move equipment to another station (``None``: no station)."""
        self._exec(
            "UPDATE equipment SET station_id = ?, updated_at = ? WHERE kitchen_id = ? AND id = ?",
            (station_id, updated_at, kitchen_id, equipment_id),
        )

    def delete_equipment(self, *, kitchen_id: str, equipment_id: str) -> None:
        self._exec(
            "DELETE FROM equipment WHERE kitchen_id = ? AND id = ?", (kitchen_id, equipment_id)
        )

    def upsert_equipment(
        self,
        *,
        kitchen_id: str,
        equipment_id: str,
        kind: str | None,
        station_id: str | None,
        health: str,
        updated_at: float,
    ) -> None:
        """Insert or update; ``None`` for kind or station keeps what is stored."""
        self._exec(
            "INSERT INTO equipment (kitchen_id, id, kind, station_id, health, updated_at)"
            " VALUES (?, ?, COALESCE(?, 'probe'), ?, ?, ?)"
            " ON CONFLICT (kitchen_id, id) DO UPDATE SET"
            " kind = COALESCE(?, kind), station_id = COALESCE(?, station_id),"
            " health = excluded.health, updated_at = excluded.updated_at",
            (kitchen_id, equipment_id, kind, station_id, health, updated_at, kind, station_id),
        )

    # skus
    def insert_sku(
        self,
        *,
        sku_id: str,
        name: str,
        station_id: str,
        recipe_steps_json: str,
        total_duration_s: float,
        freshness_window_min: float,
        priority: str,
        hold: str,
        created_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO skus (id, name, station_id, recipe_steps_json, total_duration_s,"
            " freshness_window_min, priority, hold, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sku_id,
                name,
                station_id,
                recipe_steps_json,
                total_duration_s,
                freshness_window_min,
                priority,
                hold,
                created_at,
            ),
        )

    def update_sku(
        self,
        *,
        sku_id: str,
        name: str,
        recipe_steps_json: str,
        total_duration_s: float,
        freshness_window_min: float,
        priority: str,
        hold: str,
    ) -> None:
        """Replace a SKU's recipe and rules; its station (what kitchens offer it) stays."""
        self._exec(
            "UPDATE skus SET name = ?, recipe_steps_json = ?, total_duration_s = ?,"
            " freshness_window_min = ?, priority = ?, hold = ? WHERE id = ?",
            (
                name,
                recipe_steps_json,
                total_duration_s,
                freshness_window_min,
                priority,
                hold,
                sku_id,
            ),
        )

    # orders
    def insert_order(
        self,
        *,
        order_id: str,
        idempotency_key: str,
        status: str,
        reason: str | None,
        kitchen_id: str | None,
        promised_by: float,
        destination: str,
        transport_min: float,
        priority: str,
        predicted_ready_at: float | None,
        created_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO orders (id, idempotency_key, status, reason, kitchen_id, promised_by,"
            " destination, transport_min, priority, predicted_ready_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order_id,
                idempotency_key,
                status,
                reason,
                kitchen_id,
                promised_by,
                destination,
                transport_min,
                priority,
                predicted_ready_at,
                created_at,
                created_at,
            ),
        )

    def insert_order_item(self, *, order_id: str, line: int, sku_id: str, quantity: int) -> None:
        self._exec(
            "INSERT INTO order_items (order_id, line, sku_id, quantity) VALUES (?, ?, ?, ?)",
            (order_id, line, sku_id, quantity),
        )

    def set_order_status(
        self, *, order_id: str, status: str, at: float, reason: str | None = None
    ) -> None:
        self._exec(
            "UPDATE orders SET status = ?, reason = COALESCE(?, reason), updated_at = ?,"
            " ready_at = CASE WHEN ? = 'ready' THEN ? ELSE ready_at END WHERE id = ?",
            (status, reason, at, status, at, order_id),
        )

    def set_order_kitchen(self, *, order_id: str, kitchen_id: str, at: float) -> None:
        self._exec(
            "UPDATE orders SET kitchen_id = ?, updated_at = ? WHERE id = ?",
            (kitchen_id, at, order_id),
        )

    # prep tasks
    def insert_task(
        self,
        *,
        task_id: str,
        kitchen_id: str,
        station_id: str,
        sku_id: str,
        quantity: int,
        duration_s: float,
        start_after: float,
        finish_by: float,
        predicted_ready_at: float,
        created_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO prep_tasks (id, kitchen_id, station_id, sku_id, quantity, duration_s,"
            " state, start_after, finish_by, predicted_ready_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?)",
            (
                task_id,
                kitchen_id,
                station_id,
                sku_id,
                quantity,
                duration_s,
                start_after,
                finish_by,
                predicted_ready_at,
                created_at,
                created_at,
            ),
        )

    def link_task_order(self, *, task_id: str, order_id: str) -> None:
        self._exec("INSERT INTO task_orders (task_id, order_id) VALUES (?, ?)", (task_id, order_id))

    def lease_task(
        self, *, task_id: str, agent_id: str, fencing_token: int, leased_at: float, start_by: float
    ) -> None:
        self._exec(
            "UPDATE prep_tasks SET state = 'leased', lease_agent_id = ?, fencing_token = ?,"
            " leased_at = ?, start_by = ?, updated_at = ? WHERE id = ?",
            (agent_id, fencing_token, leased_at, start_by, leased_at, task_id),
        )

    def set_task_started(self, *, task_id: str, started_at: float, at: float) -> None:
        self._exec(
            "UPDATE prep_tasks SET state = 'started', started_at = ?, updated_at = ? WHERE id = ?",
            (started_at, at, task_id),
        )

    def set_task_finished(
        self, *, task_id: str, state: str, finished_at: float, failure_reason: str | None, at: float
    ) -> None:
        self._exec(
            "UPDATE prep_tasks SET state = ?, finished_at = ?, failure_reason = ?, updated_at = ?"
            " WHERE id = ?",
            (state, finished_at, failure_reason, at, task_id),
        )

    def release_task(self, *, task_id: str, at: float) -> None:
        """Back to ``planned``; the fencing token stays, so the old lease stays stale."""
        self._exec(
            "UPDATE prep_tasks SET state = 'planned', lease_agent_id = NULL, leased_at = NULL,"
            " start_by = NULL, updated_at = ? WHERE id = ?",
            (at, task_id),
        )

    def cancel_task(self, *, task_id: str, reason: str, at: float) -> None:
        """Cancel a task; its lease fields stay, so the holder's reports still match the lease
        they were made under (and a late completion is recognised as waste, not a stranger)."""
        self._exec(
            "UPDATE prep_tasks SET state = 'cancelled', cancel_reason = ?, updated_at = ?"
            " WHERE id = ?",
            (reason, at, task_id),
        )

    def set_task_wasted(
        self, *, task_id: str, quantity: int, finished_at: float, at: float
    ) -> None:
        """A cancelled task the kitchen cooked anyway: the food is waste."""
        self._exec(
            "UPDATE prep_tasks SET wasted_quantity = ?, finished_at = ?, updated_at = ?"
            " WHERE id = ?",
            (quantity, finished_at, at, task_id),
        )

    def set_task_started_at(self, *, task_id: str, started_at: float, at: float) -> None:
        """Record when a (cancelled) task was started without changing its state."""
        self._exec(
            "UPDATE prep_tasks SET started_at = COALESCE(started_at, ?), updated_at = ?"
            " WHERE id = ?",
            (started_at, at, task_id),
        )

    def reassign_task(
        self, *, task_id: str, kitchen_id: str, fencing_token: int, at: float
    ) -> None:
        """An operator moved the task: back to ``planned`` at ``kitchen_id`` under a new
        fencing token, so every report under the old lease is stale from now on."""
        self._exec(
            "UPDATE prep_tasks SET state = 'planned', kitchen_id = ?, fencing_token = ?,"
            " lease_agent_id = NULL, leased_at = NULL, start_by = NULL, started_at = NULL,"
            " reassigned_at = ?, updated_at = ? WHERE id = ?",
            (kitchen_id, fencing_token, at, at, task_id),
        )

    # idempotency keys
    def insert_idempotency_answer(
        self,
        *,
        scope: str,
        key: str,
        request_hash: str,
        response_status: int,
        response_media_type: str,
        response_body: bytes,
        created_at: float,
    ) -> None:
        """Store the answer of a key's first request, in the transaction that did its work."""
        self._exec(
            "INSERT INTO idempotency_keys (scope, key, request_hash, state, response_status,"
            " response_media_type, response_body, created_at, completed_at)"
            " VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?)",
            (
                scope,
                key,
                request_hash,
                response_status,
                response_media_type,
                response_body,
                created_at,
                created_at,
            ),
        )

    def delete_idempotency_key(self, *, scope: str, key: str) -> None:
        self._exec("DELETE FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))

    def purge_idempotency_keys(self, *, created_before: float) -> int:
        return self._exec(
            "DELETE FROM idempotency_keys WHERE created_at < ?",
            (created_before,),
        )

    # credentials and agents
    def insert_api_token(self, *, token_hash: str, name: str, role: str, created_at: float) -> None:
        self._exec(
            "INSERT INTO api_tokens (token_hash, name, role, created_at) VALUES (?, ?, ?, ?)",
            (token_hash, name, role, created_at),
        )

    def insert_enrollment_token(
        self, *, token_hash: str, kitchen_id: str, expires_at: float, created_at: float
    ) -> None:
        self._exec(
            "INSERT INTO enrollment_tokens (token_hash, kitchen_id, expires_at, created_at)"
            " VALUES (?, ?, ?, ?)",
            (token_hash, kitchen_id, expires_at, created_at),
        )

    def use_enrollment_token(self, *, token_hash: str, used_at: float, agent_id: str) -> int:
        """Mark used; returns 0 when it was already used (a concurrent redemption won)."""
        return self._exec(
            "UPDATE enrollment_tokens SET used_at = ?, used_by_agent_id = ?"
            " WHERE token_hash = ? AND used_at IS NULL",
            (used_at, agent_id, token_hash),
        )

    def insert_agent(
        self,
        *,
        agent_id: str,
        kitchen_id: str,
        name: str,
        credential_hash: str,
        agent_version: str,
        enrolled_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO agents (id, kitchen_id, name, credential_hash, agent_version,"
            " enrolled_at) VALUES (?, ?, ?, ?, ?, ?)",
            (agent_id, kitchen_id, name, credential_hash, agent_version, enrolled_at),
        )

    def set_agent_revoked(self, *, agent_id: str, revoked: bool, at: float) -> None:
        self._exec(
            "UPDATE agents SET revoked = ?, revoked_at = ? WHERE id = ?",
            (int(revoked), at if revoked else None, agent_id),
        )

    def record_heartbeat(
        self,
        *,
        agent_id: str,
        last_seen_at: float,
        clock_offset_s: float,
        clock_offset_measured_at: float,
        clock_samples: int,
        agent_version: str,
        outbox_depth: int,
        reconnect_json: str | None,
    ) -> None:
        self._exec(
            "UPDATE agents SET last_seen_at = ?, clock_offset_s = ?, clock_offset_measured_at = ?,"
            " clock_samples = ?, agent_version = ?, outbox_depth = ?, reconnect_json = ?"
            " WHERE id = ?",
            (
                last_seen_at,
                clock_offset_s,
                clock_offset_measured_at,
                clock_samples,
                agent_version,
                outbox_depth,
                reconnect_json,
                agent_id,
            ),
        )

    def record_sync(
        self,
        *,
        agent_id: str,
        last_acked_seq: int,
        heartbeat_sent_at: float,
        stalled_first_seq: int | None,
        stalled_syncs: int,
        last_seen_at: float,
        clock_offset_s: float,
        clock_offset_measured_at: float,
        clock_samples: int,
        agent_version: str,
        outbox_depth: int,
        reconnect_json: str | None,
    ) -> None:
        """What one sync learned of its agent, in one statement: :meth:`set_agent_acked_seq`,
        :meth:`set_agent_stalled` and :meth:`record_heartbeat` together, and the newest
        ``heartbeat.sent_at`` (agent clock) the agent has sent (an older one leaves it)."""
        self._exec(
            "UPDATE agents SET last_acked_seq = ?,"
            " last_heartbeat_sent_at = MAX(COALESCE(last_heartbeat_sent_at, ?), ?),"
            " stalled_first_seq = ?, stalled_syncs = ?, last_seen_at = ?, clock_offset_s = ?,"
            " clock_offset_measured_at = ?, clock_samples = ?, agent_version = ?,"
            " outbox_depth = ?, reconnect_json = ? WHERE id = ?",
            (
                last_acked_seq,
                heartbeat_sent_at,
                heartbeat_sent_at,
                stalled_first_seq,
                stalled_syncs,
                last_seen_at,
                clock_offset_s,
                clock_offset_measured_at,
                clock_samples,
                agent_version,
                outbox_depth,
                reconnect_json,
                agent_id,
            ),
        )

    def set_agent_acked_seq(self, *, agent_id: str, last_acked_seq: int) -> None:
        self._exec("UPDATE agents SET last_acked_seq = ? WHERE id = ?", (last_acked_seq, agent_id))

    def set_agent_stalled(self, *, agent_id: str, first_seq: int | None, syncs: int) -> None:
        """How many syncs in a row began with ``first_seq`` behind a gap (``None``: no gap)."""
        self._exec(
            "UPDATE agents SET stalled_first_seq = ?, stalled_syncs = ? WHERE id = ?",
            (first_seq, syncs, agent_id),
        )

    def set_agent_unrecoverable(
        self, *, agent_id: str, from_seq: int | None, to_seq: int | None, at: float | None
    ) -> None:
        """Record (or, with ``None``, clear) the seqs the agent can no longer send."""
        self._exec(
            "UPDATE agents SET unrecoverable_from_seq = ?, unrecoverable_to_seq = ?,"
            " unrecoverable_detected_at = ? WHERE id = ?",
            (from_seq, to_seq, at, agent_id),
        )

    # events, alerts, audit
    def insert_event(
        self,
        *,
        agent_id: str,
        seq: int,
        event_id: str,
        event_type: str,
        occurred_at: float,
        server_occurred_at: float,
        received_at: float,
        payload_json: str,
        outcome: str,
    ) -> None:
        self._exec(
            "INSERT INTO events (agent_id, seq, event_id, type, occurred_at, server_occurred_at,"
            " received_at, payload_json, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                agent_id,
                seq,
                event_id,
                event_type,
                occurred_at,
                server_occurred_at,
                received_at,
                payload_json,
                outcome,
            ),
        )

    def insert_alert(
        self,
        *,
        agent_id: str,
        alert_id: str,
        kitchen_id: str,
        kind: str,
        severity: str,
        device_id: str | None,
        message: str,
        value: float | None,
        limit_value: float | None,
        raised_at: float,
    ) -> None:
        self._exec(
            "INSERT OR IGNORE INTO alerts (agent_id, alert_id, kitchen_id, kind, severity,"
            " device_id, message, value, limit_value, raised_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                agent_id,
                alert_id,
                kitchen_id,
                kind,
                severity,
                device_id,
                message,
                value,
                limit_value,
                raised_at,
            ),
        )

    def acknowledge_alert(
        self, *, agent_id: str, alert_id: str, by: str, corrective_action: str, at: float
    ) -> None:
        self._exec(
            "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?, corrective_action = ?"
            " WHERE agent_id = ? AND alert_id = ? AND acknowledged_at IS NULL",
            (at, by, corrective_action, agent_id, alert_id),
        )

    def upsert_backpressure_override(
        self,
        *,
        scope: str,
        level: str,
        actor: str,
        reason: str,
        until: float | None,
        created_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO backpressure_overrides (scope, level, actor, reason, until, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET level = excluded.level,"
            " actor = excluded.actor, reason = excluded.reason, until = excluded.until,"
            " created_at = excluded.created_at",
            (scope, level, actor, reason, until, created_at),
        )

    def delete_backpressure_override(self, *, scope: str) -> int:
        return self._exec("DELETE FROM backpressure_overrides WHERE scope = ?", (scope,))

    def set_backpressure_level(self, *, scope: str, level: str, since: float, why: str) -> None:
        self._exec(
            "INSERT INTO backpressure_levels (scope, level, since, why) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope) DO UPDATE SET level = excluded.level, since = excluded.since,"
            " why = excluded.why",
            (scope, level, since, why),
        )

    def insert_sla_alert(
        self,
        *,
        agent_id: str,
        alert_id: str,
        kitchen_id: str,
        order_id: str,
        cause: str,
        message: str,
        lead_s: float | None,
        margin_s: float | None,
        raised_at: float,
    ) -> None:
        """An "order will miss its SLA" alert: ``value`` is the lead time, ``limit`` the margin."""
        self._exec(
            "INSERT OR IGNORE INTO alerts (agent_id, alert_id, kitchen_id, kind, severity,"
            " device_id, message, value, limit_value, raised_at, order_id, cause)"
            " VALUES (?, ?, ?, 'sla_at_risk', 'warning', NULL, ?, ?, ?, ?, ?, ?)",
            (agent_id, alert_id, kitchen_id, message, lead_s, margin_s, raised_at, order_id, cause),
        )

    def resolve_alert(self, *, agent_id: str, alert_id: str, resolution: str, at: float) -> None:
        """Record that an alert's condition cleared, and how. Acknowledgement is a person's act
        and stays as it is (an alert may be resolved and never acknowledged)."""
        self._exec(
            "UPDATE alerts SET resolved_at = ?, resolution = ?"
            " WHERE agent_id = ? AND alert_id = ? AND resolved_at IS NULL",
            (at, resolution, agent_id, alert_id),
        )

    def resolve_alerts_by_prefix(
        self, *, agent_id: str, kind: str, alert_id_prefix: str, resolution: str, at: float
    ) -> int:
        """Resolve every open ``kind`` alert of ``agent_id`` whose id starts with the prefix
        (ids made of ASCII characters below DEL, so the range is exactly the prefix's)."""
        return self._exec(
            "UPDATE alerts SET resolved_at = ?, resolution = ? WHERE agent_id = ?"
            " AND alert_id >= ? AND alert_id < ? AND kind = ? AND resolved_at IS NULL",
            (at, resolution, agent_id, alert_id_prefix, alert_id_prefix + "\x7f", kind),
        )

    def replan_task(
        self,
        *,
        task_id: str,
        expected_state: str,
        expected_fencing_token: int,
        kitchen_id: str,
        station_id: str,
        start_after: float,
        predicted_ready_at: float,
        planned_finish: float,
        at: float,
    ) -> int:
        """Re-place a task that cannot have started: back to ``planned`` at its new kitchen,
        station and slot interval, under a new fencing token. Applies only if the task is still
        in the state and under the token the decision was made on; returns 0 otherwise."""
        return self._exec(
            "UPDATE prep_tasks SET state = 'planned', kitchen_id = ?, station_id = ?,"
            " start_after = ?, predicted_ready_at = ?, planned_finish = ?,"
            " fencing_token = fencing_token + 1, lease_agent_id = NULL, leased_at = NULL,"
            " start_by = NULL, flagged_at = NULL, flag_reason = NULL, updated_at = ?"
            " WHERE id = ? AND state = ? AND fencing_token = ?",
            (
                kitchen_id,
                station_id,
                start_after,
                predicted_ready_at,
                planned_finish,
                at,
                task_id,
                expected_state,
                expected_fencing_token,
            ),
        )

    def set_task_flag(
        self,
        *,
        task_id: str,
        reason: str | None,
        at: float | None,
        expected_state: str | None = None,
        expected_fencing_token: int | None = None,
        expected_reason: str | None = None,
    ) -> int:
        """Flag a task for a person (``reason``), or clear the flag with ``None``. Each
        ``expected_*`` given is a compare-and-set on what was read (state, fencing token,
        current flag); returns 0 when the task no longer matches."""
        checks: list[tuple[str, object]] = [
            ("state", expected_state),
            ("fencing_token", expected_fencing_token),
            ("flag_reason", expected_reason),
        ]
        where = "".join(f" AND {column} = ?" for column, value in checks if value is not None)
        return self._exec(
            f"UPDATE prep_tasks SET flag_reason = ?, flagged_at = ? WHERE id = ?{where}",
            (reason, at, task_id, *(value for _, value in checks if value is not None)),
        )

    # -- stock and intake planning
    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit inside the transaction: rolled back alone if the block raises."""
        self._conn.execute("SAVEPOINT intake_unit")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO intake_unit")
            self._conn.execute("RELEASE intake_unit")
            raise
        self._conn.execute("RELEASE intake_unit")

    def set_sku_planning(self, *, sku_id: str, ingredients_json: str, max_batch_units: int) -> None:
        """What planning needs of a SKU beyond its recipe: ingredients per unit, batch size."""
        self._exec(
            "UPDATE skus SET ingredients_json = ?, max_batch_units = ? WHERE id = ?",
            (ingredients_json, max_batch_units, sku_id),
        )

    def insert_planned_task(
        self,
        *,
        task_id: str,
        kitchen_id: str,
        station_id: str,
        sku_id: str,
        quantity: int,
        duration_s: float,
        start_after: float,
        planned_finish: float,
        finish_by: float,
        predicted_ready_at: float,
        created_at: float,
    ) -> None:
        """A task placed by the planner: its slot is reserved ``[start_after, planned_finish)``."""
        self._exec(
            "INSERT INTO prep_tasks (id, kitchen_id, station_id, sku_id, quantity, duration_s,"
            " state, start_after, planned_finish, finish_by, predicted_ready_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                kitchen_id,
                station_id,
                sku_id,
                quantity,
                duration_s,
                start_after,
                planned_finish,
                finish_by,
                predicted_ready_at,
                created_at,
                created_at,
            ),
        )

    def take_stock(self, *, kitchen_id: str, ingredient: str, quantity: float, at: float) -> int:
        """Decrement stock only if enough is left (one statement: no oversell); 1 if taken."""
        return self._exec(
            "UPDATE kitchen_stock SET quantity = quantity - ?, updated_at = ?"
            " WHERE kitchen_id = ? AND ingredient = ? AND quantity >= ?",
            (quantity, at, kitchen_id, ingredient, quantity),
        )

    def insert_stock_reservation(
        self,
        *,
        order_id: str,
        task_id: str,
        kitchen_id: str,
        ingredient: str,
        quantity: float,
        reserved_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO stock_reservations (order_id, task_id, kitchen_id, ingredient, quantity,"
            " reserved_at) VALUES (?, ?, ?, ?, ?, ?)",
            (order_id, task_id, kitchen_id, ingredient, quantity, reserved_at),
        )

    def release_stock_reservation(
        self, *, order_id: str, task_id: str, ingredient: str, reason: str, at: float
    ) -> int:
        """Mark the held reservation released and why; 0 if none is held (so stock is given
        back once)."""
        return self._exec(
            "UPDATE stock_reservations SET released_at = ?, release_reason = ? WHERE order_id = ?"
            " AND task_id = ? AND ingredient = ? AND released_at IS NULL",
            (at, reason, order_id, task_id, ingredient),
        )

    def add_stock(
        self,
        *,
        kitchen_id: str,
        ingredient: str,
        quantity: float,
        low_water_mark: float | None,
        at: float,
    ) -> None:
        """Add to an ingredient's stock (tracking it from now on); ``None`` keeps the mark."""
        self._exec(
            "INSERT INTO kitchen_stock (kitchen_id, ingredient, quantity, low_water_mark,"
            " updated_at) VALUES (?, ?, ?, COALESCE(?, 0), ?)"
            " ON CONFLICT (kitchen_id, ingredient) DO UPDATE SET"
            " quantity = quantity + excluded.quantity,"
            " low_water_mark = COALESCE(?, low_water_mark), updated_at = excluded.updated_at",
            (kitchen_id, ingredient, quantity, low_water_mark, at, low_water_mark),
        )

    def mark_stock_low(self, *, kitchen_id: str, ingredient: str, at: float) -> int:
        """Note that the low-stock alert was raised; 0 if not below the mark or already noted."""
        return self._exec(
            "UPDATE kitchen_stock SET low_alerted_at = ? WHERE kitchen_id = ? AND ingredient = ?"
            " AND low_alerted_at IS NULL AND quantity < low_water_mark",
            (at, kitchen_id, ingredient),
        )

    def clear_stock_low(self, *, kitchen_id: str, ingredient: str) -> int:
        """Re-arm the low-stock alert once back at or above the mark; 1 if it was raised."""
        return self._exec(
            "UPDATE kitchen_stock SET low_alerted_at = NULL WHERE kitchen_id = ?"
            " AND ingredient = ? AND low_alerted_at IS NOT NULL AND quantity >= low_water_mark",
            (kitchen_id, ingredient),
        )

    # -- sync path
    def insert_event_rows(self, *, rows: Sequence[tuple[object, ...]]) -> None:
        """Many :meth:`insert_event` rows at once, each ``(agent_id, seq, event_id, type,
        occurred_at, server_occurred_at, received_at, payload_json, outcome)``."""
        self._conn.executemany(
            "INSERT INTO events (agent_id, seq, event_id, type, occurred_at, server_occurred_at,"
            " received_at, payload_json, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def insert_audit_rows(self, *, rows: Sequence[tuple[object, ...]]) -> None:
        """Audit rows in column order (``seq`` … ``details_json, prev_hash, record_hash``), the
        only way audit records are written (:class:`control_plane.audit.Batch`)."""
        self._conn.executemany(
            "INSERT INTO audit (seq, at, actor_type, actor_id, action, subject_type, subject_id,"
            " order_id, kitchen_id, station_id, device_id, reason, details_json, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    # -- haccp evidence
    def insert_haccp_evidence(self, *, rows: Sequence[tuple[object, ...]]) -> None:
        """HACCP evidence readings, each ``(agent_id, event_seq, reading_index, kitchen_id,
        equipment_id, probe, value_c, measured_at, received_at, reason, limit_c, alert_id,
        acted_by, measured_server_at)``; a row already kept (same event, same place in it) is
        left as it is."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO haccp_evidence (agent_id, event_seq, reading_index,"
            " kitchen_id, equipment_id, probe, value_c, measured_at, received_at, reason,"
            " limit_c, alert_id, acted_by, measured_server_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def record_haccp_corrective_action(
        self,
        *,
        agent_id: str,
        alert_id: str,
        corrective_action: str,
        acted_by: str | None,
        acted_at: float,
    ) -> int:
        """Note who acted on an alert, and what they did, on the evidence of that alert;
        returns how many readings it covers (the first action recorded is kept)."""
        return self._exec(
            "UPDATE haccp_evidence SET corrective_action = ?, acted_by = ?, acted_at = ?"
            " WHERE agent_id = ? AND alert_id = ? AND corrective_action IS NULL",
            (corrective_action, acted_by, acted_at, agent_id, alert_id),
        )


T = TypeVar("T")


class _Job(Generic[T]):
    """One unit of work for the group committer, and where its outcome goes."""

    def __init__(self, work: Callable[[Writer], T]) -> None:
        self.work = work
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Commits concurrent units of work in batches: one transaction and one fsync per batch,
    and nobody's answer before the batch is on disk (SPEC guarantee 10).

    Leader/follower, no extra thread: a caller queues its unit and takes the store's write
    lock; whoever holds it commits *every* queued unit, so callers that waited behind it find
    their unit already committed. Each unit runs in its own SAVEPOINT: one that fails is rolled
    back alone and gets its own exception; the rest of the batch commits. Alone, a unit is a
    plain commit; under load many units share one fsync.
    """

    def __init__(self, store: Store, *, max_batch: int = 128) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[_Job[Any]] = []
        self._pending_lock = threading.Lock()

    def submit(self, work: Callable[[Writer], T]) -> T:
        """Run ``work`` in a write transaction; returns once its batch is committed."""
        job = _Job(work)
        with self._pending_lock:
            self._pending.append(job)
        while not job.done.is_set():
            with self._store._write_lock:
                if job.done.is_set():
                    break
                with self._pending_lock:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                self._commit(batch)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _commit(self, batch: list[_Job[Any]]) -> None:
        """Run and commit ``batch``; the caller holds the write lock."""
        conn = self._store._connection()
        try:
            _run_batch(conn, batch, self._store.memo)
            _finish_batch(conn, batch, None)
        except BaseException as exc:
            _finish_batch(conn, batch, exc)


def _run_batch(
    conn: sqlite3.Connection, batch: Sequence[_Job[Any]], memo: CatalogueMemo | None = None
) -> None:
    """Begin a write transaction and run every unit of ``batch`` in it, each in its own
    SAVEPOINT (a unit that fails is rolled back alone and keeps its exception). Raises, with the
    transaction rolled back, only when the transaction itself fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for job in batch:
            conn.execute("SAVEPOINT job")
            try:
                job.result = job.work(Writer(conn, memo))
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                job.error = (
                    StoreError(f"write failed: {exc}") if isinstance(exc, sqlite3.Error) else exc
                )
            conn.execute("RELEASE job")
    except BaseException:
        _rollback(conn)
        raise


def _commit_batch(conn: sqlite3.Connection) -> None:
    """Commit the open transaction of a batch (fsync'd: ``synchronous=FULL``)."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _finish_batch(
    conn: sqlite3.Connection, batch: Sequence[_Job[Any]], failure: BaseException | None
) -> None:
    """Commit ``batch`` (unless it already failed with ``failure``) and mark every unit done:
    after a failed transaction or commit no unit has a result, only the error."""
    try:
        if failure is None:
            _commit_batch(conn)
    except BaseException as exc:
        failure = exc
    if failure is not None:
        error = (
            StoreError(f"commit failed: {failure}")
            if isinstance(failure, sqlite3.Error)
            else failure
        )
        for job in batch:
            job.result, job.error = None, error
    for job in batch:
        job.done.set()


class LoopCommitter:
    """Group commit for units of work submitted from an asyncio event loop, run *on* it.

    A worker thread per request would hand the GIL back and forth with the event loop at every
    SQL statement (the sqlite3 module releases it around each), and on this kind of machine
    those context switches cost more than the work. Here the units queued during one turn of
    the loop run back to back on the loop thread, in one transaction on a connection of their
    own; only the COMMIT (the fsync) runs in a worker thread, so the loop keeps reading
    requests meanwhile. Nobody's answer comes before its batch is on disk (SPEC guarantee 10).

    The store's write lock is held from BEGIN to the end of the COMMIT, as for every writer. A
    unit of work must be short: it blocks the loop while it runs (at most ``max_batch`` of them
    run before the loop gets a turn).
    """

    def __init__(self, store: Store, *, max_batch: int = 32) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[_Job[Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None  # referenced, so not collected
        self._conn: sqlite3.Connection | None = None

    async def submit(self, work: Callable[[Writer], T]) -> T:
        """Run ``work`` in a write transaction; returns once its batch is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((_Job(work), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="brigade-loop-commit")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                # One turn of the loop first: the requests read meanwhile join this batch.
                await asyncio.sleep(0)
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
        finally:
            for _, future in self._pending:  # only when the loop is shutting down
                if not future.done():
                    future.set_exception(StoreError("the store is closing"))
            self._pending.clear()

    async def _commit(self, batch: list[tuple[_Job[Any], asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        jobs = [job for job, _ in batch]
        lock = self._store._write_lock
        if not lock.acquire(blocking=False):
            # Another writer (the control loop, an agent's sync) has it: wait in a thread.
            # Shielded, so a cancelled wait still releases the lock it ends up taking.
            waiting = loop.run_in_executor(None, lock.acquire)
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                waiting.add_done_callback(lambda _: lock.release())
                raise
        committed: asyncio.Future[None] | None = None
        try:
            conn = self._connection()
            try:
                _run_batch(conn, jobs, self._store.memo)
            except BaseException as exc:
                _finish_batch(conn, jobs, exc)
            else:
                committed = loop.run_in_executor(None, _finish_batch, conn, jobs, None)
                await asyncio.shield(committed)
        finally:
            if committed is not None and not committed.done():
                # Cancelled while committing: the lock is released once the commit ends.
                committed.add_done_callback(lambda _: lock.release())
            else:
                lock.release()
        for job, future in batch:
            if future.get_loop() is loop:
                _settle(future, job)
            else:  # submitted from another event loop (a second test client, say)
                future.get_loop().call_soon_threadsafe(_settle, future, job)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._store._open_connection()
        return self._conn

    def forget_connection(self) -> None:
        """The store closed its connections: open a new one if used again."""
        self._conn = None


def _settle(future: asyncio.Future[Any], job: _Job[Any]) -> None:
    """Give ``job``'s outcome to the request waiting on ``future`` (unless it went away)."""
    if future.done():
        return
    if job.error is not None:
        future.set_exception(job.error)
    else:
        future.set_result(job.result)


class Store:
    """One SQLite database file: a connection per thread, one writer at a time.

    The interface the rest of the control plane uses is narrow on purpose: :meth:`read` (a
    :class:`Reader` snapshot), :meth:`write` (a :class:`Writer` transaction), :meth:`submit`
    (a unit of work group-committed with others; :meth:`submit_on_loop` from an event loop),
    :meth:`migrate` and :meth:`close`. A PostgreSQL store would implement the same, with the
    same Reader/Writer methods.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        #: Views derived from the catalogue, shared by this store's readers and writers.
        self.memo = CatalogueMemo()
        self._committer = GroupCommitter(self)
        self._loop_committer = LoopCommitter(self)

    def submit(self, work: Callable[[Writer], T]) -> T:
        """Run ``work(tx)`` in a write transaction shared with concurrent units of work; it
        returns (or raises) only after that transaction is committed and fsync'd."""
        return self._committer.submit(work)

    async def submit_on_loop(self, work: Callable[[Writer], T]) -> T:
        """:meth:`submit` for a caller on the event loop: ``work`` runs on the loop thread (it
        must be short), grouped with the units queued in the same turn; returns after the
        commit (see :class:`LoopCommitter`). One event loop per store."""
        return await self._loop_committer.submit(work)

    def commit_units(
        self, works: Sequence[Callable[[Writer], T]]
    ) -> list[tuple[T | None, BaseException | None]]:
        """Run ``works`` in one write transaction, each in its own SAVEPOINT, and commit it
        once (one fsync); returns each unit's result or exception, once the batch is on disk.
        For a caller whose only job is writing (the intake writer process): it blocks."""
        jobs: list[_Job[T]] = [_Job(work) for work in works]
        with self._write_lock:
            conn = self._connection()
            try:
                _run_batch(conn, jobs, self.memo)
            except BaseException as exc:
                _finish_batch(conn, jobs, exc)
            else:
                _finish_batch(conn, jobs, None)
        return [(job.result, job.error) for job in jobs]

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the store at ``path``."""
        store = cls(path)
        store.migrate()
        return store

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_connection()
            self._local.conn = conn
        return conn

    def _open_connection(self) -> sqlite3.Connection:
        """A new connection, closed with the store."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[Writer]:
        """One write transaction, committed (and fsync'd) when the block ends without error."""
        with self._write_lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a write: {exc}") from exc
            try:
                yield Writer(conn, self.memo)
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreError(f"write failed: {exc}") from exc
            except BaseException:
                _rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreError(f"commit failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[Reader]:
        """A read-only snapshot."""
        conn = self._connection()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot begin a read: {exc}") from exc
        try:
            yield Reader(conn, self.memo)
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc
        finally:
            conn.execute("COMMIT")

    def migrate(self) -> list[str]:
        """Apply the migrations not yet applied, in order; return their names."""
        applied: list[str] = []
        with self.write() as tx:
            conn = tx._conn
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL"
                " NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
            for name, script in MIGRATIONS:
                if name in done:
                    continue
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, time.time())
                )
                applied.append(name)
            if applied and "0014_catalogue_version" in {*done, *applied}:
                # A migration may change catalogue rows without firing the version triggers
                # (a table rebuilt, a column added with a default): what was derived before
                # is forgotten (queries.CatalogueMemo).
                conn.execute("UPDATE catalogue_version SET version = random()")
        return applied

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
        self._loop_committer.forget_connection()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so (it does on some
    errors, e.g. ``SQLITE_FULL``); a second ROLLBACK would raise and hide the first error."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
