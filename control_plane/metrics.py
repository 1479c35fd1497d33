"""Prometheus metrics of one control-plane app, in its own registry (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the control plane exports, created once per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        self.stranded_tasks = Gauge(
            "brigade_stranded_tasks",
            "Tasks held by unreachable agents (computed at each scrape)",
            registry=self.registry,
        )
