"""``/v1/agents``: enrollment, sync (see :mod:`protocol.sync_api`), revocation."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane import auth, reconcile
from control_plane.deps import AdminDep, AgentDep, ServicesDep
from protocol.sync_api import EnrollRequest, EnrollResponse, SyncRequest, SyncResponse

router = APIRouter(prefix="/v1/agents", tags=["agents"])


@router.post("/enroll", status_code=201, response_model_exclude_none=True)
def enroll(body: EnrollRequest, services: ServicesDep) -> EnrollResponse:
    """Trade a one-time enrollment token for an agent id and credential (shown once)."""
    return auth.enroll(services.store, body, now=services.clock())


@router.post("/sync", response_model_exclude_none=True)
def sync(body: SyncRequest, services: ServicesDep, agent: AgentDep) -> SyncResponse:
    """Heartbeat, push events, renew and receive leases in one round trip."""
    response, stats = reconcile.sync(
        services.store, agent, body, now=services.clock(), settings=services.settings
    )
    metrics = services.metrics
    for event_type, count in stats.applied.items():
        metrics.events_ingested.labels(event_type).inc(count)
    metrics.events_duplicate.inc(stats.duplicates)
    metrics.events_invalid.inc(stats.invalid)
    for kind, count in stats.conflicts.items():
        metrics.conflicts.labels(kind).inc(count)
    if stats.gap:
        metrics.sync_gaps.inc()
    metrics.leases_granted.inc(stats.leases_granted)
    metrics.leases_lost.inc(stats.leases_lost)
    return response


@router.post("/{agent_id}/revoke", status_code=204)
def revoke(agent_id: str, services: ServicesDep, who: AdminDep) -> None:
    """Refuse this agent's credential from now on."""
    auth.revoke_agent(services.store, agent_id=agent_id, now=services.clock(), actor=who.name)
