"""Prometheus metrics of one control-plane app, in its own registries (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric the control plane exports, created once per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: The control loop's metrics (see ``loop_exposition``).
        self.loop_registry = CollectorRegistry(auto_describe=True)
        #: The control loop's exposition for ``/metrics``: this process's ``loop_registry``
        #: when the loop runs here, else what its process last published.
        self.loop_exposition: Callable[[], bytes] = lambda: generate_latest(self.loop_registry)
        self.request_seconds = Histogram(
            "brigade_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.responses = Counter(
            "brigade_http_responses_total",
            "HTTP responses by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.orders = Counter(
            "brigade_orders_total",
            "Order requests by outcome (accepted, rejected, replayed) and rejection reason",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.events_ingested = Counter(
            "brigade_events_ingested_total",
            "Agent events applied, by type",
            ["type"],
            registry=self.registry,
        )
        self.events_duplicate = Counter(
            "brigade_events_duplicate_total",
            "Agent events already stored (same agent and seq), ignored",
            registry=self.registry,
        )
        self.events_invalid = Counter(
            "brigade_events_invalid_total",
            "Agent events stored but not applied (unknown type or invalid payload)",
            registry=self.registry,
        )
        self.sync_gaps = Counter(
            "brigade_sync_gaps_total",
            "Syncs answered with resend_from because of a seq gap",
            registry=self.registry,
        )
        self.conflicts = Counter(
            "brigade_sync_conflicts_total",
            "Agent reports recorded as conflicts, never applied, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.leases_granted = Counter(
            "brigade_leases_granted_total", "Leases handed to agents", registry=self.registry
        )
        self.leases_lost = Counter(
            "brigade_leases_lost_total",
            "Renewals for leases the agent no longer holds",
            registry=self.registry,
        )
        self.lease_cancellations = Counter(
            "brigade_lease_cancellations_total",
            "Cancellations sent to lease holders (order cancelled)",
            registry=self.registry,
        )
        self.tasks_reassigned = Counter(
            "brigade_tasks_reassigned_total",
            "Tasks moved by an operator, by whether the old holder may have started them",
            ["possible_duplicate"],
            registry=self.registry,
        )
        self.orders_cancelled = Counter(
            "brigade_orders_cancelled_total",
            "Orders cancelled by operators",
            registry=self.registry,
        )
        self.wasted_tasks = Counter(
            "brigade_wasted_tasks_total",
            "Batches cooked for cancelled orders, by when the waste was found",
            ["when"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "brigade_agent_reconnects_total",
            "Agents that came back after a partition and drained their outbox",
            registry=self.registry,
        )
        self.reconnect_events = Counter(
            "brigade_reconnect_events_total",
            "Events of finished reconnects by result (applied, duplicate, conflict)",
            ["result"],
            registry=self.registry,
        )
        self.reconnect_offline_seconds = Histogram(
            "brigade_reconnect_offline_seconds",
            "How long agents were away before a reconnect",
            registry=self.registry,
            buckets=(60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600),
        )
        self.alerts_acknowledged = Counter(
            "brigade_alerts_acknowledged_total",
            "Alerts acknowledged with a corrective action",
            registry=self.registry,
        )
        self.admission_rejected = Counter(
            "brigade_admission_rejected_total",
            "Requests refused 503 because their traffic class was at its concurrency limit",
            ["traffic_class"],
            registry=self.registry,
        )
        self.admission_limit = Gauge(
            "brigade_admission_limit",
            "Concurrency limit of a traffic class now (adapted to its latency)",
            ["traffic_class"],
            registry=self.registry,
        )
        self.admission_in_flight = Gauge(
            "brigade_admission_in_flight",
            "Admitted requests of a traffic class in progress now",
            ["traffic_class"],
            registry=self.registry,
        )
        self.admission_latency_ewma = Gauge(
            "brigade_admission_latency_ewma_seconds",
            "Smoothed latency of a traffic class's admitted requests (about the last five)",
            ["traffic_class"],
            registry=self.registry,
        )
        self.admission_target = Gauge(
            "brigade_admission_target_seconds",
            "Latency above which a class's answers count as slow (tolerance x its uncongested"
            " latency, capped)",
            ["traffic_class"],
            registry=self.registry,
        )
        # -- work doorbell (long-polls of GET /v1/agents/work)
        self.doorbell_waiters = Gauge(
            "brigade_doorbell_waiters",
            "Agents waiting on the work doorbell now (at most one per agent)",
            registry=self.registry,
        )
        self.doorbell_wakeups = Counter(
            "brigade_doorbell_wakeups_total",
            "Work-doorbell answers by why the wait ended (changed: at once, rung, timeout,"
            " replaced by the agent's next wait, evicted)",
            ["woke"],
            registry=self.registry,
        )
        # -- control loop: a registry of its own. The loop may run in another process
        # (:mod:`control_plane.loop_process`); its exposition then arrives with its snapshot.
        self.control_loop_seconds = Histogram(
            "brigade_control_loop_tick_seconds",
            "Duration of one control-loop tick (read, decide, write, publish)",
            registry=self.loop_registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.control_loop_errors = Counter(
            "brigade_control_loop_errors_total",
            "Control-loop ticks that failed (retried at the next interval)",
            registry=self.loop_registry,
        )
        self.prep_abs_error_seconds = Histogram(
            "brigade_prep_prediction_abs_error_seconds",
            "|actual - predicted p50| prep duration of each completed task, before it was learned",
            registry=self.loop_registry,
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
        )
        self.prep_mean_abs_error_seconds = Gauge(
            "brigade_prep_prediction_mean_abs_error_seconds",
            "Mean absolute prep-time prediction error over every kitchen x SKU",
            registry=self.loop_registry,
        )
        self.prep_bias_seconds = Gauge(
            "brigade_prep_prediction_bias_seconds",
            "Mean (actual - predicted p50) prep time; positive: kitchens slower than predicted",
            registry=self.loop_registry,
        )
        self.prep_p90_coverage = Gauge(
            "brigade_prep_prediction_p90_coverage",
            "Share of completions within their predicted p90 (ideal 0.9)",
            registry=self.loop_registry,
        )
        self.sla_alerts_raised = Counter(
            "brigade_sla_alerts_raised_total",
            "Orders predicted to miss their SLA, by cause",
            ["cause"],
            registry=self.loop_registry,
        )
        self.sla_alerts_cleared = Counter(
            "brigade_sla_alerts_cleared_total",
            "SLA alerts resolved: cleared (back on time) or closed (order no longer open)",
            ["how"],
            registry=self.loop_registry,
        )
        self.sla_alert_lead_seconds = Histogram(
            "brigade_sla_alert_lead_seconds",
            "How long before the promised time an SLA alert was raised",
            registry=self.loop_registry,
            buckets=(0, 60, 300, 600, 900, 1800, 3600, 7200),
        )
        self.backpressure_level = Gauge(
            "brigade_backpressure_level",
            "Backpressure level per scope (0 normal, 1 throttle, 2 shed, 3 pause; * = fleet)",
            ["scope"],
            registry=self.loop_registry,
        )
        self.backpressure_changes = Counter(
            "brigade_backpressure_changes_total",
            "Backpressure level changes per scope, by the level entered",
            ["scope", "level"],
            registry=self.loop_registry,
        )
        self.tasks_replanned = Counter(
            "brigade_tasks_replanned_total",
            "Tasks that could not have started moved by the re-planner, by reason",
            ["reason"],
            registry=self.loop_registry,
        )
        self.tasks_flagged = Counter(
            "brigade_tasks_flagged_total",
            "Tasks flagged for an operator (stranded_unreachable, no_feasible_kitchen)",
            ["reason"],
            registry=self.loop_registry,
        )
        self.intake_writer_restarts = Counter(
            "brigade_intake_writer_restarts_total",
            "Intake writer processes that died and were started again by this server",
            registry=self.registry,
        )
        self.intake_writer_batch_orders = Histogram(
            "brigade_intake_writer_batch_orders",
            "Orders decided per transaction (one fsync) by the intake writer process",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.intake_writer_waiting = Gauge(
            "brigade_intake_writer_waiting",
            "Orders sent to the intake writer process and not answered yet",
            registry=self.registry,
        )
        self.control_loop_restarts = Counter(
            "brigade_control_loop_restarts_total",
            "Control-loop processes that died and were started again by this server",
            registry=self.registry,
        )
        self.planning_snapshot_errors = Counter(
            "brigade_planning_snapshot_errors_total",
            "Control-loop snapshots this server could not read (the last good one held)",
            registry=self.registry,
        )
        self.planning_snapshot_age_seconds = Gauge(
            "brigade_planning_snapshot_age_seconds",
            "Age of the control-loop snapshot this server follows (NaN: none yet, or the"
            " loop runs in this process)",
            registry=self.registry,
        )
        self.planning_snapshot_age_seconds.set(float("nan"))
        self.stranded_tasks = Gauge(
            "brigade_stranded_tasks",
            "Tasks held by unreachable agents (computed at each scrape)",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: the request path's metrics, then the loop's."""
        return generate_latest(self.registry) + self.loop_exposition()
