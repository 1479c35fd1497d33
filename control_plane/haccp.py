"""HACCP evidence as the control plane keeps it: what an inspector asks a kitchen for.

Agents send the readings they keep as evidence (``haccp.evidence`` events: interval samples,
every reading of an excursion, and compliance events about the measurement itself such as a
silent probe or two probes of one unit disagreeing); :mod:`control_plane.reconcile` stores them
and writes the corrective action and who took it when the alert's ``alert.resolved``
(``corrective_action``) arrives. This module turns the rows into the API's view.

>>> evidence_view(row)["reason"]  # doctest: +SKIP
'excursion'
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pydantic import Field

from control_plane.audit import iso
from control_plane.views import IsoTime, _View

__all__ = ["HaccpEvidenceOut", "HaccpEvidencePage", "evidence_view"]


class HaccpEvidenceOut(_View):
    """One evidence reading. ``measured_at`` is the time the device (or, without a device
    clock, the agent) gave the reading, as reported; ``measured_server_at`` the same instant on
    the control plane's timeline (corrected by the agent's clock offset; what ``since`` and
    ``until`` filter on); ``received_at`` is when the control plane stored it."""

    id: int
    kitchen_id: str
    equipment_id: str
    probe: str = Field(description="metric or probe channel, e.g. core_temp_c")
    value_c: float = Field(description="the actual value read, degrees Celsius")
    measured_at: IsoTime
    measured_server_at: IsoTime
    received_at: IsoTime
    reason: str = Field(
        description="interval, excursion, or a compliance event: probe_silent, "
        "device_offline, probe_check, probe_disagreement"
    )
    limit_c: float | None = Field(description="the legal limit the value was checked against")
    alert_id: str | None
    corrective_action: str | None = Field(description="what staff did about the alert")
    acted_by: str | None = Field(
        description="staff badge of whoever acted on the alert, or took the reading by hand"
    )
    acted_at: IsoTime | None
    agent_id: str
    event_seq: int


class HaccpEvidencePage(_View):
    evidence: list[HaccpEvidenceOut]
    next_cursor: str | None


def evidence_view(row: sqlite3.Row) -> dict[str, Any]:
    """The API view of one ``haccp_evidence`` row."""
    return {
        "id": row["id"],
        "kitchen_id": row["kitchen_id"],
        "equipment_id": row["equipment_id"],
        "probe": row["probe"],
        "value_c": row["value_c"],
        "measured_at": iso(row["measured_at"]),
        "measured_server_at": iso(row["measured_server_at"]),
        "received_at": iso(row["received_at"]),
        "reason": row["reason"],
        "limit_c": row["limit_c"],
        "alert_id": row["alert_id"],
        "corrective_action": row["corrective_action"],
        "acted_by": row["acted_by"],
        "acted_at": iso(row["acted_at"]),
        "agent_id": row["agent_id"],
        "event_seq": row["event_seq"],
    }
