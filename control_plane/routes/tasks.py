"""``/v1/tasks``: prep tasks, stranded ones, and the operator's reassignment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from control_plane import fleet, leases, orders
from control_plane.deps import OperatorDep, ServicesDep, ViewerDep
from control_plane.errors import NotFound
from control_plane.problems import problem_responses as errors
from control_plane.schemas import TaskReassign
from control_plane.views import TaskOut, TaskPage, TaskState

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=errors(401, 403))


@router.get("", response_model=TaskPage)
def list_tasks(
    services: ServicesDep,
    _: ViewerDep,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
    state: TaskState | None = None,
    order_id: Annotated[str | None, Query(max_length=128)] = None,
    stranded: Annotated[
        bool | None, Query(description="only tasks held by unreachable agents")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    """Prep tasks in creation order, filtered; ``stranded=true`` lists the ones waiting for an
    operator's decision."""
    now = services.clock()
    threshold = services.settings.agent_unreachable_after_s
    with services.store.read() as reader:
        holders = (
            fleet.stale_agent_ids(reader, now=now, unreachable_after_s=threshold)
            if stranded
            else None
        )
        rows = reader.tasks(
            kitchen_id=kitchen_id,
            state=state,
            order_id=order_id,
            open_leases_of_agents=holders,
            limit=limit,
            after_position=int(cursor or 0),
        )
        views = [
            orders.task_view_at(reader, row, now=now, unreachable_after_s=threshold) for row in rows
        ]
    if stranded is False:
        views = [view for view in views if not view["stranded"]]
    next_cursor = str(rows[-1]["position"]) if len(rows) == limit else None
    return {"tasks": views, "next_cursor": next_cursor}


@router.get("/{task_id}", response_model=TaskOut, responses=errors(404))
def get_task(task_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """One prep task with its lease."""
    with services.store.read() as reader:
        row = reader.task(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}")
        return orders.task_view_at(
            reader,
            row,
            now=services.clock(),
            unreachable_after_s=services.settings.agent_unreachable_after_s,
        )


@router.post("/{task_id}/reassign", response_model=TaskOut, responses=errors(404, 409, 422))
def reassign_task(
    task_id: str, body: TaskReassign, services: ServicesDep, who: OperatorDep
) -> dict[str, Any]:
    """Move a task (operator), typically one stranded on an unreachable kitchen: new fencing
    token, audited as a possible duplicate; the old holder's later reports are conflicts."""
    with services.store.read() as reader:
        before = reader.task(task_id)
    moved = leases.reassign(
        services.store,
        task_id,
        kitchen_id=body.kitchen_id,
        reason=body.reason,
        now=services.clock(),
        actor=who.name,
        unreachable_after_s=services.settings.agent_unreachable_after_s,
    )
    held = before is not None and before["state"] in fleet.HELD_STATES
    services.metrics.tasks_reassigned.labels(str(held).lower()).inc()
    return moved
