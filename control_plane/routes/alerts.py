"""``/v1/alerts``: alerts raised by kitchen agents and by the control plane, and their
acknowledgement."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from control_plane import alerts
from control_plane.deps import OperatorDep, ServicesDep, ViewerDep
from control_plane.problems import problem_responses as errors
from control_plane.schemas import AlertAcknowledge
from control_plane.views import AlertOut, AlertPage

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=errors(401, 403))


@router.get("", response_model=AlertPage)
def list_alerts(
    services: ServicesDep,
    _: ViewerDep,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    acknowledged: bool | None = None,
    resolved: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    """Alerts in the order they arrived, e.g. ``?kind=sla_at_risk&resolved=false`` for orders
    still at risk; ``acknowledged=false`` for those no person has acknowledged yet."""
    with services.store.read() as reader:
        rows = reader.alerts(
            kitchen_id=kitchen_id,
            kind=kind,
            acknowledged=acknowledged,
            resolved=resolved,
            limit=limit,
            after_position=int(cursor or 0),
        )
    next_cursor = str(rows[-1]["position"]) if len(rows) == limit else None
    return {"alerts": [alerts.alert_view(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{agent_id}/{alert_id}", response_model=AlertOut, responses=errors(404))
def get_alert(agent_id: str, alert_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """One alert, with its acknowledgement and resolution."""
    with services.store.read() as reader:
        return alerts.get_alert(reader, agent_id=agent_id, alert_id=alert_id)


@router.post("/{agent_id}/{alert_id}/acknowledge", response_model=AlertOut, responses=errors(404))
def acknowledge_alert(
    agent_id: str,
    alert_id: str,
    body: AlertAcknowledge,
    services: ServicesDep,
    who: OperatorDep,
) -> dict[str, Any]:
    """Acknowledge an alert with the corrective action taken (operator); audited. A resolved
    alert can still be acknowledged: resolution says the condition cleared, not who acted."""
    view, acknowledged = alerts.acknowledge(
        services.store,
        agent_id=agent_id,
        alert_id=alert_id,
        corrective_action=body.corrective_action,
        now=services.clock(),
        actor=who.name,
    )
    if acknowledged:
        services.metrics.alerts_acknowledged.inc()
    return view
