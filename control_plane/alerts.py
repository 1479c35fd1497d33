"""Alerts raised by kitchen agents (``alert.raised`` events) and their acknowledgement.

A food-safety alert needs a corrective action: acknowledging one records who did what, in the
alert and in the audit trail. Acknowledging twice answers the alert unchanged (a safe retry).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from control_plane import audit
from control_plane.audit import iso
from control_plane.errors import NotFound
from control_plane.store import Store


def alert_view(row: sqlite3.Row) -> dict[str, Any]:
    """One alert as the operators' API shows it."""
    return {
        "agent_id": row["agent_id"],
        "alert_id": row["alert_id"],
        "kitchen_id": row["kitchen_id"],
        "kind": row["kind"],
        "severity": row["severity"],
        "device_id": row["device_id"],
        "message": row["message"],
        "value": row["value"],
        "limit": row["limit_value"],
        "raised_at": iso(row["raised_at"]),
        "acknowledged_at": iso(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"],
        "corrective_action": row["corrective_action"],
    }


def acknowledge(
    store: Store,
    *,
    agent_id: str,
    alert_id: str,
    corrective_action: str,
    now: float,
    actor: str,
) -> tuple[dict[str, Any], bool]:
    """Acknowledge an alert with the corrective action taken; returns it and whether this
    call acknowledged it (False when it already was)."""
    with store.write() as tx:
        row = tx.alert(agent_id, alert_id)
        if row is None:
            raise NotFound(f"no alert {alert_id!r} from agent {agent_id!r}")
        if row["acknowledged_at"] is not None:
            return alert_view(row), False
        tx.acknowledge_alert(
            agent_id=agent_id,
            alert_id=alert_id,
            by=actor,
            corrective_action=corrective_action,
            at=now,
        )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="alert.acknowledged",
            subject_type="alert",
            subject_id=alert_id,
            kitchen_id=row["kitchen_id"],
            device_id=row["device_id"],
            reason=row["kind"],
            details={"agent_id": agent_id, "corrective_action": corrective_action},
        )
        updated = tx.alert(agent_id, alert_id)
        assert updated is not None
        return alert_view(updated), True
