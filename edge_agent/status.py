"""What ``brigade-agent status`` reports: the store's view, plus the live links when the agent
runs (asked of its local ``/healthz``; a stopped agent is reported as such, not as an error).

>>> report = status_report(load_config(Path("/etc/brigade/agent.json")))  # doctest: +SKIP
>>> report["outbox_depth"], report["links"]  # doctest: +SKIP
(0, {'mqtt': 'up', 'control_plane': 'up'})
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from edge_agent.config import AgentConfig
from edge_agent.store import Store, read_boot_id


def status_report(settings: AgentConfig, *, now: float | None = None) -> dict[str, Any]:
    """Identity, outbox and routine lane, last sync, tasks, devices, open alerts, disk, links.

    Raises :class:`~edge_agent.errors.StoreError` when the store cannot be read.
    """
    wall = time.time() if now is None else now
    with Store.open(settings.db_path, boot_id=read_boot_id()) as store:
        last_seq, acked_seq = store.sequence()
        oldest = store.oldest_pending_at()
        report: dict[str, Any] = {
            "agent_id": settings.agent_id,
            "kitchen_id": settings.kitchen_id,
            "control_plane_url": settings.control_plane_url,
            "mqtt": f"{settings.mqtt_host}:{settings.mqtt_port}",
            "outbox_depth": store.outbox_depth(),
            "oldest_event_age_s": round(max(0.0, wall - oldest), 1) if oldest else 0.0,
            "last_seq": last_seq,
            "acked_seq": acked_seq,
            "routine_backlog": store.routine_depth(),
            "routine_dropped": store.counters().get("routine_dropped", 0),
            "routine_compacted": store.counters().get("routine_compacted", 0),
            "ack_above_sent": store.counters().get("ack_above_sent", 0),
            "resend_below_acked": store.counters().get("resend_below_acked", 0),
            "last_sync": store.sync_state(),
            "tasks_by_state": store.run_counts(),
            "active_tasks": [t.run.task_id for t in store.active_tasks()],
            "devices": [
                {k: d[k] for k in ("device_id", "link", "kind", "status", "missed_messages")}
                for d in store.devices()
            ],
            "open_alerts": [
                {k: a[k] for k in ("alert_id", "kind", "severity", "device_id", "message")}
                for a in store.alerts(open_only=True)
            ],
            "store_used_bytes": store.used_bytes(),
            "disk_budget_bytes": int(settings.disk_budget_mb * 1024 * 1024),
        }
    report["disk_bytes"] = sum(
        f.stat().st_size for f in (settings.db_path, Path(f"{settings.db_path}-wal")) if f.exists()
    )
    report["links"] = _live_links(settings)
    return report


def _live_links(settings: AgentConfig) -> dict[str, str]:
    if settings.metrics_port in (None, 0):
        return {"agent": "unknown (local metrics are off)"}
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/healthz"
    try:
        body = httpx.get(url, timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return {"agent": f"not running (no answer on {url})"}
    links = body.get("links") if isinstance(body, dict) else None
    return {str(k): str(v) for k, v in links.items()} if isinstance(links, dict) else {}


def format_status(report: dict[str, Any], *, now: float) -> list[str]:
    """The report as the lines ``status`` prints (no credential: the report has none)."""
    sync = report["last_sync"]
    last_ok = sync.get("last_success_at")
    ago = f"{now - float(last_ok):.0f}s ago" if last_ok else "never"
    error = f", last error: {sync['last_error']}" if sync.get("last_error") else ""
    links = ", ".join(f"{k} {v}" for k, v in report["links"].items()) or "unknown"
    devices = ", ".join(f"{d['device_id']} {d['status']}" for d in report["devices"]) or "none"
    lines = [
        f"agent {report['agent_id']} (kitchen {report['kitchen_id']})",
        f"control plane {report['control_plane_url']}, broker {report['mqtt']}",
        f"links: {links}",
        f"outbox {report['outbox_depth']} events (last seq {report['last_seq']}, acked "
        f"{report['acked_seq']}, oldest {report['oldest_event_age_s']}s); routine backlog "
        f"{report['routine_backlog']}, compacted {report['routine_compacted']}, dropped "
        f"{report['routine_dropped']}",
        f"last successful sync: {ago}{error}",
        *(
            [
                f"sync anomalies: {report.get('resend_below_acked', 0)} resend requests below "
                f"the acked seq, {report.get('ack_above_sent', 0)} acks above the seq sent"
            ]
            if report.get("resend_below_acked") or report.get("ack_above_sent")
            else []
        ),
        f"active tasks: {', '.join(report['active_tasks']) or 'none'}",
        f"devices: {devices}",
        f"open alerts: {len(report['open_alerts'])}",
        *(
            f"  {a['severity']} {a['kind']} {a['device_id'] or ''}: {a['message']}"
            for a in report["open_alerts"]
        ),
        f"disk: {report['disk_bytes'] / 1e6:.1f} MB on disk, "
        f"{report['store_used_bytes'] / 1e6:.1f} MB used of {report['disk_budget_bytes'] / 1e6:.0f}"
        " MB budget",
    ]
    return lines
