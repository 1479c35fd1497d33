"""``/v1/backpressure``: each kitchen's and the fleet's level and why, and operators' overrides."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import AwareDatetime, Field

from control_plane import backpressure_overrides
from control_plane.deps import OperatorDep, ServicesDep, ViewerDep
from control_plane.problems import problem_responses as errors
from control_plane.schemas import _Request
from control_plane.views import IsoTime, _View

router = APIRouter(prefix="/v1/backpressure", tags=["planning"], responses=errors(401, 403))

Level = Literal["normal", "throttle", "shed", "pause"]
Scope = Annotated[
    str,
    Path(
        pattern=r"^(\*|[A-Za-z0-9_-]{1,64})$",
        description="'*' for the whole fleet, or a kitchen id",
    ),
]


class BackpressureOverrideIn(_Request):
    level: Level
    reason: str = Field(min_length=1, max_length=500)
    #: Until when the override holds (``null``: until removed).
    until: AwareDatetime | None = None


class ActionsOut(_View):
    reject_priorities: list[str]
    promise_delay_s: float
    retry_after_s: int | None
    accept_new_work: bool


class OverrideOut(_View):
    level: Level
    actor: str
    reason: str
    until: IsoTime | None
    created_at: IsoTime


class ScopeOut(_View):
    scope: str
    kitchen_id: str | None
    level: Level
    why: str
    since: IsoTime | None
    actions: ActionsOut
    override: OverrideOut | None


class BackpressureOut(_View):
    evaluated: bool = Field(description="false until the control loop's first evaluation")
    scopes: list[ScopeOut]


def _wake_control_loop(request: Request) -> None:
    loop = getattr(request.app.state, "control_loop", None)
    if loop is not None:
        loop.wake()


@router.get("", response_model=BackpressureOut)
def get_backpressure(services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """The fleet's (``*``) and every kitchen's level, why, since when, the actions intake
    applies, and any operator override."""
    with services.store.read() as reader:
        return backpressure_overrides.backpressure_view(
            reader, services.planning, now=services.clock()
        )


@router.put("/overrides/{scope}", response_model=ScopeOut, responses=errors(404, 422))
def put_override(
    scope: Scope,
    body: BackpressureOverrideIn,
    request: Request,
    services: ServicesDep,
    who: OperatorDep,
) -> dict[str, Any]:
    """Pin a scope at a level (operator); applied at the control loop's next tick; audited."""
    now = services.clock()
    until = None if body.until is None else datetime.timestamp(body.until)
    backpressure_overrides.set_override(
        services.store,
        scope,
        level=body.level,
        reason=body.reason,
        until=until,
        now=now,
        actor=who.name,
    )
    _wake_control_loop(request)
    with services.store.read() as reader:
        return backpressure_overrides.scope_view(reader, services.planning, scope, now=now)


@router.delete("/overrides/{scope}", status_code=204, responses=errors(404))
def delete_override(
    scope: Scope, request: Request, services: ServicesDep, who: OperatorDep
) -> None:
    """Remove a scope's override (operator); 404 when it has none; audited."""
    backpressure_overrides.clear_override(
        services.store, scope, now=services.clock(), actor=who.name
    )
    _wake_control_loop(request)
