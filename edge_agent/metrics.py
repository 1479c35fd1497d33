"""Local observability: ``/metrics`` (Prometheus text) and ``/healthz`` (JSON) on a local port.

Metrics are read from the running agent at scrape time by one collector on the agent's own
registry (no process-global state, so tests may run several agents), covering outbox depth and
the age of its oldest event, routine backlog and drops, sync lag, link states, readings ingested
and dropped by reason, task runs by state, open alerts and disk use. ``/healthz`` answers 200
while the agent's threads run and 503 ``{"status": "degraded", ...}`` when a link is down.

The server is a small ``ThreadingHTTPServer`` on its own thread (``brigade-metrics``); a port
already in use is logged and skipped, never fatal: the kitchen keeps cooking without metrics.

>>> server = MetricsServer.start_for(agent, "127.0.0.1", 9464)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)


def snapshot(agent: Agent) -> dict[str, Any]:
    """Everything the endpoints report, read from the live agent (cheap SQLite counts)."""
    store = agent.store
    wall = agent.clock.wall()
    data: dict[str, Any] = {"links": agent.link_states()}
    if store is not None:
        oldest = store.oldest_pending_at()
        last_seq, acked_seq = store.sequence()
        db = agent.config.db_path
        data |= {
            "outbox_depth": store.outbox_depth(),
            "oldest_event_age_s": max(0.0, wall - oldest) if oldest is not None else 0.0,
            "last_seq": last_seq,
            "acked_seq": acked_seq,
            "routine_backlog": store.routine_depth(),
            "routine_dropped": store.counters().get("routine_dropped", 0),
            "routine_compacted": store.counters().get("routine_compacted", 0),
            "ack_above_sent": store.counters().get("ack_above_sent", 0),
            "resend_below_acked": store.counters().get("resend_below_acked", 0),
            "tasks_by_state": store.run_counts(),
            "open_alerts": [
                {"alert_id": a["alert_id"], "kind": a["kind"], "severity": a["severity"]}
                for a in store.alerts(open_only=True)
            ],
            "store_used_bytes": store.used_bytes(),
            "disk_bytes": sum(
                f.stat().st_size for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if f.exists()
            ),
            "disk_budget_bytes": int(agent.config.disk_budget_mb * 1024 * 1024),
        }
    if agent.last_sync_ok_mono is not None:
        data["sync_lag_s"] = max(0.0, agent.clock.monotonic() - agent.last_sync_ok_mono)
    dropped: dict[str, int] = {}
    if agent.link is not None:
        for reason, n in agent.link.drops.counts().items():
            dropped[f"mqtt:{reason}"] = n
    for index, serial_link in enumerate(agent.serial_links):
        for reason, n in serial_link.drops.counts().items():
            dropped[f"serial{index}:{reason}"] = n
    if agent.ingest is not None:
        counts = agent.ingest.counts()
        data["readings_ingested"] = counts["readings_ingested"]
        data["missed_messages"] = counts["missed_messages"]
        data["alerts_raised"] = counts["alerts_raised"]
        for reason, n in dict(counts["dropped"]).items():  # type: ignore[call-overload]
            dropped[f"ingest:{reason}"] = n
    data["dropped"] = dropped
    return data


class AgentCollector(Collector):
    """Turns :func:`snapshot` into Prometheus metric families at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        data = snapshot(self._agent)
        simple = {
            "outbox_depth": ("brigade_agent_outbox_depth", "Unacknowledged events in the outbox."),
            "oldest_event_age_s": (
                "brigade_agent_outbox_oldest_event_age_seconds",
                "Age of the oldest unacknowledged event.",
            ),
            "routine_backlog": (
                "brigade_agent_routine_backlog",
                "Routine telemetry summaries waiting for a seq.",
            ),
            "routine_dropped": (
                "brigade_agent_routine_dropped_total",
                "Routine telemetry summaries dropped by the disk budget.",
            ),
            "routine_compacted": (
                "brigade_agent_routine_compacted_total",
                "Routine telemetry summaries merged into coarser ones by the disk budget.",
            ),
            "ack_above_sent": (
                "brigade_agent_sync_ack_above_sent_total",
                "Sync acks above the highest seq sent (clamped).",
            ),
            "resend_below_acked": (
                "brigade_agent_sync_resend_below_acked_total",
                "Resend requests for events already acked and deleted.",
            ),
            "sync_lag_s": (
                "brigade_agent_sync_lag_seconds",
                "Seconds since the last successful sync.",
            ),
            "readings_ingested": (
                "brigade_agent_readings_ingested_total",
                "Readings taken into the store.",
            ),
            "missed_messages": (
                "brigade_agent_device_messages_missed_total",
                "Device messages missed (seq gaps).",
            ),
            "alerts_raised": ("brigade_agent_alerts_raised_total", "Alerts raised locally."),
            "store_used_bytes": ("brigade_agent_store_used_bytes", "Bytes used in the store."),
            "disk_bytes": ("brigade_agent_disk_bytes", "Bytes of the store's files on disk."),
            "disk_budget_bytes": ("brigade_agent_disk_budget_bytes", "The store's disk budget."),
        }
        for key, (name, help_text) in simple.items():
            if key in data:
                yield GaugeMetricFamily(name, help_text, value=float(data[key]))
        links = GaugeMetricFamily(
            "brigade_agent_link_up", "1 when the link is up.", labels=["link"]
        )
        for name, state in data["links"].items():
            links.add_metric([name], 1.0 if state == "up" else 0.0)
        yield links
        dropped = GaugeMetricFamily(
            "brigade_agent_messages_dropped_total",
            "Messages and frames dropped, by source and reason.",
            labels=["source", "reason"],
        )
        for key, n in data["dropped"].items():
            source, _, reason = key.partition(":")
            dropped.add_metric([source, reason], float(n))
        yield dropped
        tasks = GaugeMetricFamily(
            "brigade_agent_task_runs", "Task runs by state.", labels=["state"]
        )
        for state, n in data.get("tasks_by_state", {}).items():
            tasks.add_metric([state], float(n))
        yield tasks
        alerts = GaugeMetricFamily(
            "brigade_agent_open_alerts",
            "Open alerts by kind and severity.",
            labels=["kind", "severity"],
        )
        by_kind: dict[tuple[str, str], int] = {}
        for alert in data.get("open_alerts", []):
            pair = (str(alert["kind"]), str(alert["severity"]))
            by_kind[pair] = by_kind.get(pair, 0) + 1
        for (kind, severity), n in by_kind.items():
            alerts.add_metric([kind, severity], float(n))
        yield alerts


class MetricsServer:
    """``/metrics`` and ``/healthz`` for one agent; :meth:`stop` shuts it down."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @classmethod
    def start_for(cls, agent: Agent, host: str, port: int) -> MetricsServer | None:
        """Serve on ``host:port`` (0 picks a free port); ``None`` if it cannot bind."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(agent))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    if self.path == "/metrics":
                        self._send(200, "text/plain; version=0.0.4", generate_latest(registry))
                    elif self.path == "/healthz":
                        data = snapshot(agent)
                        healthy = all(s == "up" for s in data["links"].values())
                        body = {"status": "ok" if healthy else "degraded", **data}
                        self._send(
                            200 if healthy else 503,
                            "application/json",
                            json.dumps(body, default=str).encode(),
                        )
                    else:
                        self._send(404, "application/json", b'{"detail": "not found"}')
                except Exception:
                    log.exception("metrics endpoint failed")
                    self._send(500, "application/json", b'{"detail": "internal error"}')

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: scrapes are not news."""

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            log.warning(
                "cannot serve local metrics; continuing without them",
                extra={"host": host, "port": port, "error": str(exc)},
            )
            return None
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="brigade-metrics", daemon=True)
        thread.start()
        return cls(server, thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
