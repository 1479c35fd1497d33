"""``/v1/agents``: enrollment, sync and the work doorbell (see :mod:`protocol.sync_api`),
listing, revocation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from control_plane import auth, doorbell, fleet, reconcile
from control_plane.deps import (
    AdminDep,
    AgentDep,
    Services,
    ServicesDep,
    ViewerDep,
    bearer_token,
)
from control_plane.errors import Forbidden, NotFound, SeqReused
from control_plane.metrics import Metrics
from control_plane.problems import problem_responses as errors
from control_plane.schemas import GapAccept
from control_plane.views import AgentList, AgentOut
from protocol.sync_api import (
    EnrollRequest,
    EnrollResponse,
    SyncRequest,
    SyncResponse,
    WorkResponse,
)

router = APIRouter(prefix="/v1/agents", tags=["agents"])
#: Guards the one-time creation of the app's sync pacer.
_PACER_LOCK = threading.Lock()


@router.post(
    "/enroll",
    status_code=201,
    response_model_exclude_none=True,
    responses=errors(401, 403, 404),
)
def enroll(body: EnrollRequest, services: ServicesDep) -> EnrollResponse:
    """Trade a one-time enrollment token for an agent id and credential (shown once).

    401: unknown token; 403 ``enrollment-token-refused`` with ``reason`` ``token_used`` or
    ``token_expired``.
    """
    return auth.enroll(services.store, body, now=services.clock())


def _inlined_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema with its ``$defs`` inlined, to document a body read by hand."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {key: inline(value) for key, value in node.items() if key != "$ref"}
            return inline(defs[ref.removeprefix("#/$defs/")]) | rest
        return {key: inline(value) for key, value in node.items()}

    inlined: dict[str, Any] = inline(schema)
    return inlined


async def _sync_body(request: Request) -> SyncRequest:
    """The body as a :class:`SyncRequest`, validated by pydantic-core straight from the bytes:
    a catch-up batch carries thousands of events, and ``json.loads`` plus validation of the
    resulting objects cost several times as much. Errors are the usual 422 problem."""
    raw = await request.body()
    try:
        return SyncRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]}
                for error in exc.errors(include_url=False)
            ]
        ) from exc


SyncBody = Annotated[SyncRequest, Depends(_sync_body)]


@router.post(
    "/sync",
    response_model=SyncResponse,
    response_model_exclude_none=True,
    responses=errors(401, 403, 409, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inlined_schema(SyncRequest)}},
        }
    },
)
def sync(agent: AgentDep, body: SyncBody, services: ServicesDep, request: Request) -> Response:
    """Heartbeat, push events, renew and receive leases and cancellations in one round trip.

    403 when the credential is revoked or the events are for another agent or kitchen; 409
    ``seq-reused`` (nothing applied) when an acknowledged seq comes with another event id.
    """
    pacer = _sync_pacer(request, services)
    try:
        response, stats = reconcile.sync(
            services.store,
            agent,
            body,
            now=services.clock(),
            settings=services.settings,
            next_sync_s=pacer.observe(agent.agent_id, now=time.monotonic()),
        )
    except SeqReused:
        services.metrics.conflicts.labels("seq_reused").inc()
        raise
    _count(services.metrics, stats)
    # Serialised once here: the model was built and validated by ``reconcile.sync`` already,
    # and a fleet's syncs are the control plane's busiest path.
    return Response(
        content=response.model_dump_json(exclude_none=True), media_type="application/json"
    )


def _sync_pacer(request: Request, services: Services) -> fleet.SyncPacer:
    """The app's :class:`~control_plane.fleet.SyncPacer`, made on first use (one per app) and
    seeded with the agents that synced within its window (before a restart, say)."""
    pacer: fleet.SyncPacer | None = getattr(request.app.state, "sync_pacer", None)
    if pacer is None:
        with _PACER_LOCK:
            pacer = getattr(request.app.state, "sync_pacer", None)
            if pacer is None:
                settings = services.settings
                pacer = fleet.SyncPacer(
                    budget_per_s=settings.sync_budget_per_s, cap_s=settings.sync_interval_cap_s
                )
                now = services.clock()
                with services.store.read() as reader:
                    pacer.seed(
                        {
                            str(row["id"]): now - float(row["last_seen_at"])
                            for row in reader.agents()
                            if row["last_seen_at"] is not None and not row["revoked"]
                        },
                        now=time.monotonic(),
                    )
                request.app.state.sync_pacer = pacer
    return pacer


def _count(metrics: Metrics, stats: reconcile.SyncStats) -> None:
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
    metrics.lease_cancellations.inc(stats.cancellations)
    metrics.wasted_tasks.labels("reported_by_kitchen").inc(stats.wasted_tasks)
    if stats.reconnect is not None:
        metrics.reconnects.inc()
        metrics.reconnect_offline_seconds.observe(stats.reconnect.offline_s)
        metrics.reconnect_events.labels("applied").inc(stats.reconnect.events_applied)
        metrics.reconnect_events.labels("duplicate").inc(stats.reconnect.duplicates_ignored)
        metrics.reconnect_events.labels("conflict").inc(stats.reconnect.conflicts)


# Declared before ``/{agent_id}``, which would otherwise take "work" for an agent id.
@router.get(
    "/work",
    response_model=WorkResponse,
    response_model_exclude_none=True,
    responses=errors(401, 403),
)
async def work(
    agent: AgentDep,
    services: ServicesDep,
    request: Request,
    since: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    wait_s: Annotated[float, Query(ge=0, le=3600)] = 20.0,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
) -> WorkResponse:
    """The work doorbell: answered once the work version of the agent's kitchen differs from
    ``since`` (at once if it already does), else after ``wait_s`` (capped at 25 s). The agent
    syncs when ``changed``, and at ``next_lease_at``. A hint only: work travels in syncs.

    403 when the credential is revoked or ``kitchen_id`` is not the agent's kitchen.
    """
    if kitchen_id is not None and kitchen_id != agent.kitchen_id:
        raise Forbidden(f"agent {agent.agent_id} acts only for kitchen {agent.kitchen_id}")
    bell: doorbell.WorkDoorbell = request.app.state.doorbell
    signal = await _unless_client_gone(
        request,
        bell.wait(
            agent_id=agent.agent_id,
            kitchen_id=agent.kitchen_id,
            since=since,
            timeout_s=min(wait_s, doorbell.MAX_WAIT_S),
        ),
        gone=lambda: doorbell.WorkSignal(bell.version(agent.kitchen_id), False, "disconnected"),
    )
    services.metrics.doorbell_wakeups.labels(signal.woke).inc()
    now = services.clock()
    with services.store.read() as reader:
        # Checked again after the wait: the credential may have been revoked meanwhile.
        auth.authenticate_agent(reader, bearer_token(request))
        lease_at = doorbell.upcoming_lease_at(
            reader,
            kitchen_id=agent.kitchen_id,
            now=now,
            horizon_s=services.settings.lease_horizon_s,
        )
    return WorkResponse(
        version=signal.version, changed=signal.changed, next_lease_at=lease_at, server_time=now
    )


async def _unless_client_gone(
    request: Request,
    waiting: Coroutine[Any, Any, doorbell.WorkSignal],
    *,
    gone: Callable[[], doorbell.WorkSignal],
) -> doorbell.WorkSignal:
    """``waiting``'s signal or, once the client hangs up, ``gone()``: the waiter is removed
    at once rather than held until its timeout for nobody."""
    wait_task = asyncio.ensure_future(waiting)
    gone_task = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({wait_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (wait_task, gone_task):
            task.cancel()
        await asyncio.gather(wait_task, gone_task, return_exceptions=True)
    if wait_task.cancelled():
        return gone()
    return wait_task.result()


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body of a GET was read already)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:
        # Cannot tell: wait on as if connected (the wait's own timeout bounds it) rather than
        # answer at once, which would invite the agent straight back.
        await asyncio.get_running_loop().create_future()


@router.get("", response_model=AgentList, responses=errors(401, 403))
def list_agents(
    services: ServicesDep,
    _: ViewerDep,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Enrolled agents: last sync, reachability, outbox depth, clock offset, last reconnect."""
    now = services.clock()
    threshold = services.settings.agent_unreachable_after_s
    with services.store.read() as reader:
        rows = reader.agents(kitchen_id=kitchen_id)
    return {
        "agents": [fleet.agent_view(row, now=now, unreachable_after_s=threshold) for row in rows]
    }


@router.get("/{agent_id}", response_model=AgentOut, responses=errors(401, 403, 404))
def get_agent(agent_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """One agent."""
    with services.store.read() as reader:
        row = reader.agent(agent_id)
    if row is None:
        raise NotFound(f"no agent {agent_id!r}")
    return fleet.agent_view(
        row,
        now=services.clock(),
        unreachable_after_s=services.settings.agent_unreachable_after_s,
    )


@router.post(
    "/{agent_id}/accept-gap", response_model=AgentOut, responses=errors(401, 403, 404, 409, 422)
)
def accept_gap(
    agent_id: str, body: GapAccept, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Give up the agent's ``events_unrecoverable`` gap (admin): its acknowledged seq moves
    past it, audited. 409 ``no_unrecoverable_gap`` when none is recorded."""
    return fleet.accept_gap(
        services.store,
        agent_id,
        reason=body.reason,
        now=services.clock(),
        actor=who.name,
        unreachable_after_s=services.settings.agent_unreachable_after_s,
    )


@router.post("/{agent_id}/revoke", status_code=204, responses=errors(401, 403, 404))
def revoke(agent_id: str, services: ServicesDep, who: AdminDep, request: Request) -> None:
    """Refuse this agent's credential from now on (admin); its syncs get 403."""
    auth.revoke_agent(services.store, agent_id=agent_id, now=services.clock(), actor=who.name)
    # A doorbell request it holds is answered now; its next one gets the 403.
    bell: doorbell.WorkDoorbell = request.app.state.doorbell
    bell.evict(agent_id)
