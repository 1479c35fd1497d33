"""The control plane's schema as named, ordered migrations (applied by :meth:`Store.migrate`).

A migration is never edited once released; a change of schema is a new migration at the end.
Columns are named for what they mean in the kitchen: times are unix seconds (UTC) as REAL.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE kitchens (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, timezone TEXT NOT NULL, location TEXT,
            status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'offline')),
            created_at REAL NOT NULL);
        CREATE TABLE stations (
            kitchen_id TEXT NOT NULL REFERENCES kitchens(id), id TEXT NOT NULL,
            name TEXT NOT NULL, slots INTEGER NOT NULL CHECK (slots >= 1),
            PRIMARY KEY (kitchen_id, id));
        CREATE TABLE equipment (
            kitchen_id TEXT NOT NULL REFERENCES kitchens(id), id TEXT NOT NULL,
            kind TEXT NOT NULL, station_id TEXT,
            health TEXT NOT NULL CHECK (health IN ('ok', 'degraded', 'failed', 'offline')),
            updated_at REAL NOT NULL, PRIMARY KEY (kitchen_id, id));
        CREATE TABLE skus (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, station_id TEXT NOT NULL,
            recipe_steps_json TEXT NOT NULL, total_duration_s REAL NOT NULL,
            freshness_window_min REAL NOT NULL, priority TEXT NOT NULL, hold TEXT NOT NULL,
            created_at REAL NOT NULL);
        CREATE TABLE orders (
            id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('accepted', 'planned', 'in_prep', 'ready',
                'handed_over', 'rejected', 'cancelled', 'failed')),
            reason TEXT, kitchen_id TEXT, promised_by REAL NOT NULL, destination TEXT NOT NULL,
            transport_min REAL NOT NULL, priority TEXT NOT NULL, predicted_ready_at REAL,
            created_at REAL NOT NULL, ready_at REAL, updated_at REAL NOT NULL);
        CREATE INDEX orders_by_status ON orders (status);
        CREATE INDEX orders_by_kitchen ON orders (kitchen_id, status);
        CREATE TABLE order_items (
            order_id TEXT NOT NULL REFERENCES orders(id), line INTEGER NOT NULL,
            sku_id TEXT NOT NULL, quantity INTEGER NOT NULL CHECK (quantity >= 1),
            PRIMARY KEY (order_id, line));
        CREATE TABLE idempotency_keys (
            key TEXT PRIMARY KEY, request_hash TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
            response_status INTEGER, response_media_type TEXT, response_body BLOB,
            created_at REAL NOT NULL, completed_at REAL);
        CREATE TABLE prep_tasks (
            id TEXT PRIMARY KEY, kitchen_id TEXT NOT NULL, station_id TEXT NOT NULL,
            sku_id TEXT NOT NULL, quantity INTEGER NOT NULL, duration_s REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('planned', 'leased', 'started', 'done',
                'failed', 'cancelled')),
            start_after REAL NOT NULL, finish_by REAL NOT NULL, predicted_ready_at REAL NOT NULL,
            fencing_token INTEGER NOT NULL DEFAULT 0, lease_agent_id TEXT, leased_at REAL,
            start_by REAL, started_at REAL, finished_at REAL, failure_reason TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE INDEX tasks_leasable ON prep_tasks (kitchen_id, state, start_after);
        CREATE TABLE task_orders (
            task_id TEXT NOT NULL REFERENCES prep_tasks(id),
            order_id TEXT NOT NULL REFERENCES orders(id), PRIMARY KEY (task_id, order_id));
        CREATE INDEX task_orders_by_order ON task_orders (order_id);
        CREATE TABLE api_tokens (
            token_hash TEXT PRIMARY KEY, name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            created_at REAL NOT NULL);
        CREATE TABLE enrollment_tokens (
            token_hash TEXT PRIMARY KEY, kitchen_id TEXT NOT NULL REFERENCES kitchens(id),
            expires_at REAL NOT NULL, used_at REAL, used_by_agent_id TEXT,
            created_at REAL NOT NULL);
        CREATE TABLE agents (
            id TEXT PRIMARY KEY, kitchen_id TEXT NOT NULL REFERENCES kitchens(id),
            name TEXT NOT NULL, credential_hash TEXT NOT NULL UNIQUE,
            revoked INTEGER NOT NULL DEFAULT 0, agent_version TEXT NOT NULL,
            enrolled_at REAL NOT NULL, last_seen_at REAL,
            last_acked_seq INTEGER NOT NULL DEFAULT 0,
            clock_offset_s REAL NOT NULL DEFAULT 0, outbox_depth INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE events (
            agent_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,
            type TEXT NOT NULL, occurred_at REAL NOT NULL, server_occurred_at REAL NOT NULL,
            received_at REAL NOT NULL, payload_json TEXT NOT NULL, outcome TEXT NOT NULL,
            PRIMARY KEY (agent_id, seq));
        CREATE TABLE alerts (
            agent_id TEXT NOT NULL, alert_id TEXT NOT NULL, kitchen_id TEXT NOT NULL,
            kind TEXT NOT NULL, severity TEXT NOT NULL, device_id TEXT, message TEXT NOT NULL,
            value REAL, limit_value REAL, raised_at REAL NOT NULL,
            PRIMARY KEY (agent_id, alert_id));
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor_type TEXT NOT NULL,
            actor_id TEXT NOT NULL, action TEXT NOT NULL, subject_type TEXT NOT NULL,
            subject_id TEXT NOT NULL, order_id TEXT, kitchen_id TEXT, station_id TEXT,
            device_id TEXT, reason TEXT, details_json TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
        CREATE INDEX audit_by_order ON audit (order_id, seq);
        """,
    ),
    (
        # The audit trail is append-only: the database itself refuses edits and deletions.
        "0002_audit_append_only",
        """
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        """,
    ),
    (
        # Operators' API: cancellation and reassignment of tasks, alert acknowledgement,
        # clock-offset estimation and per-reconnect reconciliation summaries.
        "0003_operations",
        """
        ALTER TABLE prep_tasks ADD COLUMN cancel_reason TEXT;
        ALTER TABLE prep_tasks ADD COLUMN reassigned_at REAL;
        ALTER TABLE prep_tasks ADD COLUMN wasted_quantity INTEGER;
        CREATE INDEX tasks_by_lease_agent ON prep_tasks (lease_agent_id, state);
        CREATE INDEX tasks_by_state ON prep_tasks (state, kitchen_id);
        ALTER TABLE alerts ADD COLUMN acknowledged_at REAL;
        ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
        ALTER TABLE alerts ADD COLUMN corrective_action TEXT;
        CREATE INDEX alerts_by_kitchen ON alerts (kitchen_id, raised_at);
        ALTER TABLE agents ADD COLUMN clock_offset_measured_at REAL;
        ALTER TABLE agents ADD COLUMN clock_samples INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE agents ADD COLUMN reconnect_json TEXT;
        ALTER TABLE agents ADD COLUMN revoked_at REAL;
        CREATE INDEX agents_by_kitchen ON agents (kitchen_id);
        CREATE INDEX audit_by_subject ON audit (subject_type, subject_id, seq);
        CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
        """,
    ),
    (
        # Open work per station, kept by the database itself as tasks change, so planning an
        # order reads one row per station instead of summing every open task.
        "0004_station_open_work",
        """
        CREATE TABLE station_open_work (
            kitchen_id TEXT NOT NULL, station_id TEXT NOT NULL,
            open_work_s REAL NOT NULL DEFAULT 0, PRIMARY KEY (kitchen_id, station_id));
        INSERT INTO station_open_work (kitchen_id, station_id, open_work_s)
            SELECT kitchen_id, station_id, SUM(duration_s) FROM prep_tasks
            WHERE state IN ('planned', 'leased', 'started') GROUP BY kitchen_id, station_id;
        CREATE TRIGGER open_work_on_insert AFTER INSERT ON prep_tasks
            WHEN NEW.state IN ('planned', 'leased', 'started')
        BEGIN
            INSERT INTO station_open_work (kitchen_id, station_id, open_work_s)
                VALUES (NEW.kitchen_id, NEW.station_id, NEW.duration_s)
                ON CONFLICT (kitchen_id, station_id)
                DO UPDATE SET open_work_s = open_work_s + excluded.open_work_s;
        END;
        CREATE TRIGGER open_work_on_update
            AFTER UPDATE OF state, kitchen_id, station_id, duration_s ON prep_tasks
        BEGIN
            UPDATE station_open_work SET open_work_s = open_work_s - OLD.duration_s
                WHERE OLD.state IN ('planned', 'leased', 'started')
                AND kitchen_id = OLD.kitchen_id AND station_id = OLD.station_id;
            INSERT INTO station_open_work (kitchen_id, station_id, open_work_s)
                SELECT NEW.kitchen_id, NEW.station_id, NEW.duration_s
                WHERE NEW.state IN ('planned', 'leased', 'started')
                ON CONFLICT (kitchen_id, station_id)
                DO UPDATE SET open_work_s = open_work_s + excluded.open_work_s;
        END;
        CREATE TRIGGER open_work_on_delete AFTER DELETE ON prep_tasks
            WHEN OLD.state IN ('planned', 'leased', 'started')
        BEGIN
            UPDATE station_open_work SET open_work_s = open_work_s - OLD.duration_s
                WHERE kitchen_id = OLD.kitchen_id AND station_id = OLD.station_id;
        END;
        """,
    ),
    (
        # Sync ordering and unrecoverable gaps: the newest heartbeat an agent built (so a
        # stale, reordered request takes no lease back), and a gap at the start of the agent's
        # batches that it keeps sending unchanged (its events are gone; an operator decides).
        "0005_sync_order_and_unrecoverable_gaps",
        """
        ALTER TABLE agents ADD COLUMN last_heartbeat_sent_at REAL;
        ALTER TABLE agents ADD COLUMN stalled_first_seq INTEGER;
        ALTER TABLE agents ADD COLUMN stalled_syncs INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE agents ADD COLUMN unrecoverable_from_seq INTEGER;
        ALTER TABLE agents ADD COLUMN unrecoverable_to_seq INTEGER;
        ALTER TABLE agents ADD COLUMN unrecoverable_detected_at REAL;
        """,
    ),
    (
        # Intake plans with the planner: what SKUs use (ingredients per unit, batch size), each
        # task's reserved slot interval (start_after .. planned_finish, the p90), kitchen stock
        # and the reservations of each order (released exactly once on cancellation).
        "0006_stock_and_intake_planning",
        """
        ALTER TABLE skus ADD COLUMN ingredients_json TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE skus ADD COLUMN max_batch_units INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE prep_tasks ADD COLUMN planned_finish REAL;
        UPDATE prep_tasks SET planned_finish = MAX(predicted_ready_at, start_after + duration_s);
        CREATE INDEX tasks_booked_by_station
            ON prep_tasks (kitchen_id, station_id, planned_finish, start_after)
            WHERE state IN ('planned', 'leased', 'started');
        CREATE TRIGGER planned_finish_follows_start AFTER UPDATE OF start_after ON prep_tasks
            WHEN NEW.planned_finish IS OLD.planned_finish
        BEGIN
            UPDATE prep_tasks SET planned_finish = OLD.planned_finish + NEW.start_after
                - OLD.start_after WHERE id = NEW.id;
        END;
        CREATE TABLE kitchen_stock (
            kitchen_id TEXT NOT NULL REFERENCES kitchens(id), ingredient TEXT NOT NULL,
            quantity REAL NOT NULL CHECK (quantity >= 0),
            low_water_mark REAL NOT NULL DEFAULT 0 CHECK (low_water_mark >= 0),
            low_alerted_at REAL, updated_at REAL NOT NULL,
            PRIMARY KEY (kitchen_id, ingredient));
        CREATE TABLE stock_reservations (
            order_id TEXT NOT NULL REFERENCES orders(id), task_id TEXT NOT NULL,
            kitchen_id TEXT NOT NULL, ingredient TEXT NOT NULL,
            quantity REAL NOT NULL CHECK (quantity > 0), reserved_at REAL NOT NULL,
            released_at REAL, PRIMARY KEY (order_id, task_id, ingredient));
        """,
    ),
    (
        # The control loop: operators' backpressure overrides and each scope's level (both
        # survive a restart), SLA alerts tied to their order and resolved when it recovers,
        # tasks flagged for a person (stranded on an unreachable kitchen, or nowhere to go),
        # and completions found by audit action (the prep-time learner's cursor).
        "0007_control_loop",
        """
        CREATE TABLE backpressure_overrides (
            scope TEXT PRIMARY KEY,
            level TEXT NOT NULL CHECK (level IN ('normal', 'throttle', 'shed', 'pause')),
            actor TEXT NOT NULL, reason TEXT NOT NULL, until REAL, created_at REAL NOT NULL);
        CREATE TABLE backpressure_levels (
            scope TEXT PRIMARY KEY,
            level TEXT NOT NULL CHECK (level IN ('normal', 'throttle', 'shed', 'pause')),
            since REAL NOT NULL, why TEXT NOT NULL);
        ALTER TABLE alerts ADD COLUMN order_id TEXT;
        ALTER TABLE alerts ADD COLUMN cause TEXT;
        ALTER TABLE alerts ADD COLUMN resolved_at REAL;
        CREATE INDEX alerts_open_by_kind ON alerts (kind, resolved_at);
        ALTER TABLE prep_tasks ADD COLUMN flagged_at REAL;
        ALTER TABLE prep_tasks ADD COLUMN flag_reason TEXT;
        CREATE INDEX audit_by_action ON audit (action, seq);
        """,
    ),
    (
        # A re-planned task's reservation moves with it: released at the old kitchen, taken
        # again at the new one. Each hold is one row (its own id), at most one live per order,
        # task and ingredient, so a task can move back and forth and cancelling still gives
        # each hold back once; why it was given back is kept (order_cancelled, task_moved).
        # An alert's resolution (its condition cleared) is recorded apart from acknowledgement
        # (a person's act): alerts the control loop resolved before this were stored as
        # acknowledged by "control-loop"; that becomes their resolution.
        "0008_reservations_follow_moves_and_alert_resolution",
        """
        CREATE TABLE stock_reservations_0008 (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL REFERENCES orders(id), task_id TEXT NOT NULL,
            kitchen_id TEXT NOT NULL, ingredient TEXT NOT NULL,
            quantity REAL NOT NULL CHECK (quantity > 0), reserved_at REAL NOT NULL,
            released_at REAL, release_reason TEXT);
        INSERT INTO stock_reservations_0008 (order_id, task_id, kitchen_id, ingredient, quantity,
            reserved_at, released_at, release_reason)
            SELECT order_id, task_id, kitchen_id, ingredient, quantity, reserved_at, released_at,
                CASE WHEN released_at IS NULL THEN NULL ELSE 'order_cancelled' END
            FROM stock_reservations ORDER BY reserved_at, order_id, task_id, ingredient;
        DROP TABLE stock_reservations;
        ALTER TABLE stock_reservations_0008 RENAME TO stock_reservations;
        CREATE UNIQUE INDEX stock_reservations_held
            ON stock_reservations (order_id, task_id, ingredient) WHERE released_at IS NULL;
        CREATE INDEX stock_reservations_by_task ON stock_reservations (task_id, released_at);
        ALTER TABLE alerts ADD COLUMN resolution TEXT;
        UPDATE alerts SET resolution = corrective_action, acknowledged_at = NULL,
            acknowledged_by = NULL, corrective_action = NULL
            WHERE resolved_at IS NOT NULL AND acknowledged_by = 'control-loop';
        """,
    ),
    (
        # HACCP evidence the agents keep (haccp.evidence events): the actual value, when it was
        # measured, which device and probe, why it was kept, the limit and the alert; who acted
        # and what they did arrive later with the alert's corrective action. One row per
        # reading, unique by the event that carried it and its place in that event.
        "0009_haccp_evidence",
        """
        CREATE TABLE haccp_evidence (
            id INTEGER PRIMARY KEY,
            agent_id TEXT NOT NULL, event_seq INTEGER NOT NULL, reading_index INTEGER NOT NULL,
            kitchen_id TEXT NOT NULL, equipment_id TEXT NOT NULL, probe TEXT NOT NULL,
            value_c REAL NOT NULL, measured_at REAL NOT NULL, received_at REAL NOT NULL,
            reason TEXT NOT NULL, limit_c REAL, alert_id TEXT,
            corrective_action TEXT, acted_by TEXT, acted_at REAL,
            UNIQUE (agent_id, event_seq, reading_index));
        CREATE INDEX haccp_evidence_by_kitchen_time
            ON haccp_evidence (kitchen_id, measured_at, id);
        CREATE INDEX haccp_evidence_by_alert ON haccp_evidence (agent_id, alert_id);
        """,
    ),
    (
        # The control loop reads flagged tasks every tick: only those rows, in id order, without
        # scanning every task ever planned.
        "0010_flagged_tasks_index",
        """
        CREATE INDEX prep_tasks_flagged ON prep_tasks (id) WHERE flag_reason IS NOT NULL;
        """,
    ),
    (
        # HACCP evidence gets when it was measured on the control plane's timeline (the agent's
        # clock corrected by its estimated offset, never after it was received), which
        # ``since``/``until`` filter on; ``measured_at`` stays the value as reported. Rows kept
        # before this carry the agent's latest offset, the best estimate there is for them.
        "0011_haccp_server_time",
        """
        ALTER TABLE haccp_evidence ADD COLUMN measured_server_at REAL;
        UPDATE haccp_evidence SET measured_server_at = MIN(received_at, measured_at + COALESCE(
            (SELECT clock_offset_s FROM agents WHERE agents.id = haccp_evidence.agent_id), 0));
        CREATE INDEX haccp_evidence_by_kitchen_server_time
            ON haccp_evidence (kitchen_id, measured_server_at, id);
        """,
    ),
    (
        # Idempotency keys are scoped to the operator who sent them (the API token's name), as
        # payment APIs scope them to an account: two operators' clients may use the same key
        # without replaying, or being refused, each other's answers. Answers stored before get
        # the operator the audit trail recorded for their order ('' if none is found: such a
        # key can no longer be replayed, and is purged with the rest after the retention).
        "0012_idempotency_scope",
        """
        CREATE INDEX orders_by_idempotency_key ON orders (idempotency_key, created_at);
        CREATE TABLE idempotency_keys_scoped (
            scope TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
            response_status INTEGER, response_media_type TEXT, response_body BLOB,
            created_at REAL NOT NULL, completed_at REAL,
            PRIMARY KEY (scope, key));
        INSERT INTO idempotency_keys_scoped (scope, key, request_hash, state, response_status,
            response_media_type, response_body, created_at, completed_at)
        SELECT COALESCE((
                SELECT a.actor_id FROM orders o JOIN audit a ON a.order_id = o.id
                WHERE o.idempotency_key = k.key
                    AND a.action IN ('order.accepted', 'order.rejected')
                ORDER BY o.created_at DESC, a.seq LIMIT 1), ''),
            k.key, k.request_hash, k.state, k.response_status, k.response_media_type,
            k.response_body, k.created_at, k.completed_at
        FROM idempotency_keys k;
        DROP TABLE idempotency_keys;
        ALTER TABLE idempotency_keys_scoped RENAME TO idempotency_keys;
        CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
        DROP INDEX orders_by_idempotency_key;
        """,
    ),
    (
        # Booked slot intervals per station, identical ones counted together, kept by the
        # database itself as tasks change (like 0004): intake reads a station's few distinct
        # intervals instead of scanning every open task of it, whose number grows with the
        # orders on the books.
        "0013_station_bookings",
        """
        CREATE TABLE station_bookings (
            kitchen_id TEXT NOT NULL, station_id TEXT NOT NULL,
            planned_finish REAL NOT NULL, start_after REAL NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (kitchen_id, station_id, planned_finish, start_after)) WITHOUT ROWID;
        INSERT INTO station_bookings (kitchen_id, station_id, planned_finish, start_after, n)
            SELECT kitchen_id, station_id, planned_finish, start_after, COUNT(*) FROM prep_tasks
            WHERE state IN ('planned', 'leased', 'started') AND planned_finish IS NOT NULL
                AND start_after IS NOT NULL
            GROUP BY kitchen_id, station_id, planned_finish, start_after;
        CREATE TRIGGER bookings_on_insert AFTER INSERT ON prep_tasks
            WHEN NEW.state IN ('planned', 'leased', 'started') AND NEW.planned_finish IS NOT NULL
                AND NEW.start_after IS NOT NULL
        BEGIN
            INSERT INTO station_bookings (kitchen_id, station_id, planned_finish, start_after, n)
                VALUES (NEW.kitchen_id, NEW.station_id, NEW.planned_finish, NEW.start_after, 1)
                ON CONFLICT (kitchen_id, station_id, planned_finish, start_after)
                DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER bookings_on_update
            AFTER UPDATE OF state, kitchen_id, station_id, planned_finish, start_after
            ON prep_tasks
        BEGIN
            UPDATE station_bookings SET n = n - 1
                WHERE OLD.state IN ('planned', 'leased', 'started')
                AND kitchen_id = OLD.kitchen_id AND station_id = OLD.station_id
                AND planned_finish = OLD.planned_finish AND start_after = OLD.start_after;
            DELETE FROM station_bookings
                WHERE kitchen_id = OLD.kitchen_id AND station_id = OLD.station_id
                AND planned_finish = OLD.planned_finish AND start_after = OLD.start_after
                AND n <= 0;
            INSERT INTO station_bookings (kitchen_id, station_id, planned_finish, start_after, n)
                SELECT NEW.kitchen_id, NEW.station_id, NEW.planned_finish, NEW.start_after, 1
                WHERE NEW.state IN ('planned', 'leased', 'started')
                    AND NEW.planned_finish IS NOT NULL AND NEW.start_after IS NOT NULL
                ON CONFLICT (kitchen_id, station_id, planned_finish, start_after)
                DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER bookings_on_delete AFTER DELETE ON prep_tasks
            WHEN OLD.state IN ('planned', 'leased', 'started')
        BEGIN
            UPDATE station_bookings SET n = n - 1
                WHERE kitchen_id = OLD.kitchen_id AND station_id = OLD.station_id
                AND planned_finish = OLD.planned_finish AND start_after = OLD.start_after;
            DELETE FROM station_bookings
                WHERE kitchen_id = OLD.kitchen_id AND station_id = OLD.station_id
                AND planned_finish = OLD.planned_finish AND start_after = OLD.start_after
                AND n <= 0;
        END;
        """,
    ),
    (
        # Changed in the same transaction as any change to what processes keep derived views
        # of (queries.CatalogueMemo): kitchens, stations, SKUs and operator tokens. A random
        # value, not a counter: a change rolled back must not leave its version to be reused
        # by a different change committed later.
        "0014_catalogue_version",
        """
        CREATE TABLE catalogue_version (
            id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
        INSERT INTO catalogue_version (id, version) VALUES (1, 0);
        CREATE TRIGGER catalogue_version_on_kitchens_insert AFTER INSERT ON kitchens
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_kitchens_update AFTER UPDATE ON kitchens
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_kitchens_delete AFTER DELETE ON kitchens
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_stations_insert AFTER INSERT ON stations
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_stations_update AFTER UPDATE ON stations
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_stations_delete AFTER DELETE ON stations
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_skus_insert AFTER INSERT ON skus
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_skus_update AFTER UPDATE ON skus
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_skus_delete AFTER DELETE ON skus
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_api_tokens_insert AFTER INSERT ON api_tokens
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_api_tokens_update AFTER UPDATE ON api_tokens
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        CREATE TRIGGER catalogue_version_on_api_tokens_delete AFTER DELETE ON api_tokens
        BEGIN
            UPDATE catalogue_version SET version = random();
        END;
        """,
    ),
)
