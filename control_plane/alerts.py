"""Alerts and their acknowledgement: raised by kitchen agents (``alert.raised`` events) or by
the control plane itself (``agent_id`` ``control-plane``: ``sla_at_risk``, ``low_stock``).

Two things happen to an alert, apart from each other:

- **acknowledged** — a person's act: an operator records the corrective action taken, in the
  alert and in the audit trail. Acknowledging twice answers the alert unchanged (a safe retry);
- **resolved** — the condition cleared (an order at risk recovered or closed): ``resolved_at``
  and ``resolution``, set by the system. A resolved alert nobody acknowledged stays
  unacknowledged; an alert is *open* until it is resolved.

>>> alert_view(row)["resolved_at"], alert_view(row)["acknowledged_by"]  # doctest: +SKIP
('2026-01-01T12:05:00.000000+00:00', None)
"""

from __future__ import annotations

import sqlite3
from typing import Any

from control_plane import audit
from control_plane.audit import iso
from control_plane.errors import NotFound
from control_plane.queries import Reader
from control_plane.store import Store

#: The ``agent_id`` of the alerts the control plane raises itself (``sla_at_risk``,
#: ``low_stock``): alerts are keyed by the agent that raised them.
CONTROL_PLANE_SOURCE = "control-plane"


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
        "order_id": row["order_id"],
        "cause": row["cause"],
        "raised_at": iso(row["raised_at"]),
        "acknowledged_at": iso(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"],
        "corrective_action": row["corrective_action"],
        "resolved_at": iso(row["resolved_at"]),
        "resolution": row["resolution"],
    }


def get_alert(reader: Reader, *, agent_id: str, alert_id: str) -> dict[str, Any]:
    """One alert; :class:`NotFound` if there is none."""
    row = reader.alert(agent_id, alert_id)
    if row is None:
        raise NotFound(f"no alert {alert_id!r} from agent {agent_id!r}")
    return alert_view(row)


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
