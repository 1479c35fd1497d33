"""Leases: permission for one agent to run one prep task, fenced by a token.

Granting a lease bumps the task's ``fencing_token``; anything an agent reports about a task must
carry the current token, so a lease that was withdrawn (released, re-planned, cancelled) can never
be used to start or finish it again. ``start_by = max(start_after, now) + grace`` is the deadline
after which the agent must not start the task (SPEC guarantee 3).

Every sync: renewals are checked (:func:`renew`), leases the agent holds but did not renew are
sent again or, past their start-by, taken back (:func:`redeliver_or_reclaim`), and new ones are
granted (:func:`grant`), all inside the sync's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from control_plane import audit, stock
from control_plane.auth import AgentIdentity
from control_plane.config import Settings
from control_plane.doorbell import ring_kitchens
from control_plane.errors import NotFound, StateConflict, StockInsufficient, Unprocessable
from control_plane.fleet import task_is_stranded
from control_plane.orders import task_view_at
from control_plane.store import Store, Writer
from protocol.messages import DeviceKind
from protocol.sync_api import Cancellation, Lease, LeaseRenewal, RecipeStep


def start_by_for(*, start_after: float, now: float, grace_s: float) -> float:
    """The lease's start-by deadline on the server clock."""
    return max(start_after, now) + grace_s


def recipe_steps(recipe_steps_json: str) -> list[RecipeStep]:
    """A SKU's stored recipe as the steps an agent executes."""
    steps = []
    for index, step in enumerate(json.loads(recipe_steps_json)):
        kind = step.get("equipment_kind")
        steps.append(
            RecipeStep(
                index=index,
                name=step["name"],
                equipment_kind=DeviceKind(kind) if kind else None,
                action=step.get("action", "cook"),
                setpoint_c=step.get("setpoint_c"),
                duration_s=step["duration_s"],
                manual=bool(step.get("manual", False)),
                min_core_temp_c=step.get("min_core_temp_c"),
            )
        )
    return steps


def renew(
    tx: Writer, agent: AgentIdentity, renewals: list[LeaseRenewal]
) -> tuple[list[str], list[Cancellation]]:
    """Keep the leases the agent still holds.

    Returns the task ids it no longer holds (re-planned, reassigned: ``lost_leases``) and the
    cancellations of leases it holds on tasks whose order was cancelled; the agent drops those
    it has not started and reports what it cooked anyway (recorded as waste).
    """
    lost: list[str] = []
    cancelled: list[Cancellation] = []
    for renewal in renewals:
        task = tx.task(renewal.task_id)
        same_lease = (
            task is not None
            and task["lease_agent_id"] == agent.agent_id
            and task["fencing_token"] == renewal.fencing_token
        )
        if task is not None and same_lease and task["state"] == "cancelled":
            cancelled.append(
                Cancellation(
                    task_id=renewal.task_id,
                    fencing_token=renewal.fencing_token,
                    reason=str(task["cancel_reason"] or "cancelled"),
                )
            )
        # A task this agent finished (maybe in this very batch) is not a lost lease.
        elif not same_lease or task is None or task["state"] == "planned":
            lost.append(renewal.task_id)
    return lost, cancelled


def redeliver_or_reclaim(
    tx: Writer,
    agent: AgentIdentity,
    *,
    renewed: set[str],
    want: int,
    now: float,
    built_at: float,
    caught_up: bool = True,
) -> list[Lease]:
    """Deal with leases this agent holds on the server but did not renew (so does not know of,
    e.g. the answer that carried them was lost): before ``start_by`` they are sent again, same
    fencing token (up to ``want``); after it, the agent is reachable and reported no start, so
    the task cannot have started and goes back to ``planned`` (SPEC guarantee 3).

    ``caught_up`` says the agent's outbox is drained (no gap, nothing left behind this batch):
    only then does "reported no start" mean it did not start, so only then is a task reclaimed.
    ``built_at`` is when the agent built the request, on the server's timeline: the request
    speaks only for that instant, so only a lease whose ``start_by`` had passed by then is
    reclaimed (a request delayed in a queue may predate the lease, or the agent's start of it).
    """
    redelivered: list[Lease] = []
    for task in tx.tasks_leased_to(agent.agent_id):
        if task["id"] in renewed:
            continue
        if task["start_by"] > now:
            if len(redelivered) < want:
                redelivered.append(_lease_message(tx, task, now=now))
            continue
        if not caught_up or task["start_by"] >= built_at:
            continue
        tx.release_task(task_id=task["id"], at=now)
        for order_id in tx.order_ids_of_task(task["id"]):
            audit.append(
                tx,
                at=now,
                actor_type="system",
                actor_id="leases",
                action="task.lease_expired",
                subject_type="task",
                subject_id=task["id"],
                order_id=order_id,
                kitchen_id=agent.kitchen_id,
                station_id=task["station_id"],
                reason="start_by_passed_without_start",
                details={"agent_id": agent.agent_id, "fencing_token": task["fencing_token"]},
            )
    return redelivered


def release_cancelled_unstarted(
    tx: Writer, agent: AgentIdentity, *, now: float, built_at: float, caught_up: bool
) -> list[str]:
    """Give back the stock of cancelled tasks this agent had leased once they are known never
    to have started: as for a reclaim, the start-by passed before the agent built this request
    and its outbox is drained with no start reported, and an agent never starts after start-by
    (SPEC guarantee 3). A task that did start keeps its stock (cooked: waste when reported).
    Returns the task ids whose stock was given back (each reservation at most once)."""
    if not caught_up:
        return []
    rows = tx.cancelled_unstarted_tasks_holding_stock(
        agent_id=agent.agent_id, start_by_before=built_at
    )
    task_ids = [str(row["id"]) for row in rows]
    if task_ids:
        stock.release(
            tx,
            task_ids=task_ids,
            now=now,
            actor="leases",
            actor_type="system",
            reason=stock.CANCELLED_UNSTARTED,
        )
    return task_ids


def grant(
    tx: Writer, agent: AgentIdentity, *, want: int, now: float, settings: Settings
) -> list[Lease]:
    """Lease up to ``want`` planned tasks of the agent's kitchen due within the horizon."""
    if want <= 0:
        return []
    kitchen = tx.kitchen(agent.kitchen_id)
    if kitchen is None or kitchen["status"] == "offline":
        return []
    rows = tx.leasable_tasks(
        kitchen_id=agent.kitchen_id,
        start_after_until=now + settings.lease_horizon_s,
        limit=want,
    )
    return [_lease_one(tx, agent, row, now=now, settings=settings) for row in rows]


def _lease_one(
    tx: Writer, agent: AgentIdentity, task: sqlite3.Row, *, now: float, settings: Settings
) -> Lease:
    task_id = str(task["id"])
    fencing_token = int(task["fencing_token"]) + 1
    start_by = start_by_for(
        start_after=task["start_after"], now=now, grace_s=settings.start_by_grace_s
    )
    tx.lease_task(
        task_id=task_id,
        agent_id=agent.agent_id,
        fencing_token=fencing_token,
        leased_at=now,
        start_by=start_by,
    )
    for order_id in tx.order_ids_of_task(task_id):
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="leases",
            action="task.leased",
            subject_type="task",
            subject_id=task_id,
            order_id=order_id,
            kitchen_id=agent.kitchen_id,
            station_id=task["station_id"],
            details={
                "agent_id": agent.agent_id,
                "fencing_token": fencing_token,
                "start_by": start_by,
            },
        )
    leased = tx.task(task_id)
    assert leased is not None
    return _lease_message(tx, leased, now=now)


def _lease_message(tx: Writer, task: sqlite3.Row, *, now: float) -> Lease:
    """The protocol message of a task's current lease."""
    sku = tx.sku(task["sku_id"])
    assert sku is not None, "a task's SKU is never deleted"
    return Lease(
        task_id=task["id"],
        kitchen_id=task["kitchen_id"],
        station_id=task["station_id"],
        sku_id=task["sku_id"],
        sku_name=sku["name"],
        quantity=task["quantity"],
        order_ids=tx.order_ids_of_task(task["id"]),
        steps=recipe_steps(sku["recipe_steps_json"]),
        fencing_token=task["fencing_token"],
        start_after=task["start_after"],
        finish_by=task["finish_by"],
        start_by=task["start_by"],
        start_within_s=max(0.0, task["start_by"] - now),
    )


#: Task states an operator may move to another kitchen (or back to the queue).
REASSIGNABLE = ("planned", "leased", "started")


def reassign(
    store: Store,
    task_id: str,
    *,
    kitchen_id: str | None,
    reason: str,
    now: float,
    actor: str,
    unreachable_after_s: float,
) -> dict[str, Any]:
    """An operator's decision to move a task, typically one stranded on an unreachable kitchen.

    The task goes back to ``planned`` (at ``kitchen_id``, by default where it is) under a new
    fencing token, so whatever the old lease holder reports later is a conflict, never applied.
    If the old holder may have started it, the audit record says ``possible_duplicate``.
    """
    with store.write() as tx:
        task = tx.task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        if task["state"] not in REASSIGNABLE:
            raise StateConflict(
                f"task {task_id} is {task['state']}; only {', '.join(REASSIGNABLE)} tasks can be"
                " reassigned",
                reason="task_not_reassignable",
            )
        target = kitchen_id or str(task["kitchen_id"])
        if tx.kitchen(target) is None:
            raise Unprocessable(f"no kitchen {target!r}", reason="kitchen_unknown")
        if tx.station(target, str(task["station_id"])) is None:
            raise Unprocessable(
                f"kitchen {target!r} has no station {task['station_id']!r} for this task",
                reason="station_missing",
            )
        was_stranded = task_is_stranded(tx, task, now=now, unreachable_after_s=unreachable_after_s)
        fencing_token = int(task["fencing_token"]) + 1
        possible_duplicate = task["state"] in ("leased", "started")
        if target != task["kitchen_id"]:
            # The stock goes with the task (taken at the target by conditional decrement), and
            # stays used up at the old kitchen too when that kitchen may cook it.
            try:
                taken = stock.move_reservations(
                    tx,
                    task_id=task_id,
                    to_kitchen_id=target,
                    order_needs=_order_needs(tx, task),
                    now=now,
                    keep_old=possible_duplicate,
                    actor_type="operator",
                    actor=actor,
                    reason="task_reassigned",
                )
            except stock.OutOfStock as short:
                raise StockInsufficient(
                    f"kitchen {target!r} does not have enough {', '.join(short.ingredients)}"
                    f" for task {task_id}; deliver stock there or choose another kitchen",
                    reason="out_of_stock",
                ) from short
            stock.raise_low_stock_alerts(tx, kitchen_id=target, ingredients=taken, now=now)
        tx.reassign_task(task_id=task_id, kitchen_id=target, fencing_token=fencing_token, at=now)
        for order_id in tx.order_ids_of_task(task_id):
            order = tx.order(order_id)
            if order is not None and order["kitchen_id"] != target:
                tx.set_order_kitchen(order_id=order_id, kitchen_id=target, at=now)
            if (
                order is not None
                and order["status"] == "in_prep"
                and not any(t["state"] == "started" for t in tx.tasks_of_order(order_id))
            ):
                tx.set_order_status(order_id=order_id, status="planned", at=now)
            audit.append(
                tx,
                at=now,
                actor_type="operator",
                actor_id=actor,
                action="task.reassigned",
                subject_type="task",
                subject_id=task_id,
                order_id=order_id,
                kitchen_id=target,
                station_id=task["station_id"],
                reason=reason,
                details={
                    "from_kitchen_id": task["kitchen_id"],
                    "to_kitchen_id": target,
                    "previous_state": task["state"],
                    "previous_agent_id": task["lease_agent_id"],
                    "previous_fencing_token": task["fencing_token"],
                    "fencing_token": fencing_token,
                    "stranded": was_stranded,
                    # The old holder may have started (or may still start) it: if it reports
                    # cooking it, that batch is a duplicate, recorded as a conflict.
                    "possible_duplicate": possible_duplicate,
                },
            )
        moved = tx.task(task_id)
        assert moved is not None
        view = task_view_at(tx, moved, now=now, unreachable_after_s=unreachable_after_s)
    # Committed: the target kitchen's agent may lease it now, the old one must hear it lost it.
    ring_kitchens({str(task["kitchen_id"]), target})
    return view


def _order_needs(tx: Writer, task: sqlite3.Row) -> dict[str, dict[str, float]]:
    """What ``task`` uses for each order it serves: its SKU's per-unit amounts times its
    quantity, shared by the units each order has of the SKU."""
    sku = tx.sku(str(task["sku_id"]))
    ingredients = json.loads(sku["ingredients_json"]) if sku is not None else []
    order_ids = tx.order_ids_of_task(str(task["id"]))
    if not ingredients or not order_ids:
        return {}
    units = {
        order_id: sum(
            int(item["quantity"])
            for item in tx.order_items(order_id)
            if item["sku_id"] == task["sku_id"]
        )
        for order_id in order_ids
    }
    total = sum(units.values())
    needs: dict[str, dict[str, float]] = {}
    for order_id in order_ids:
        share = units[order_id] / total if total else 1.0 / len(order_ids)
        for ingredient, per_unit in ingredients:
            amount = float(per_unit) * int(task["quantity"]) * share
            if amount > 0:
                per_order = needs.setdefault(order_id, {})
                per_order[str(ingredient)] = per_order.get(str(ingredient), 0.0) + amount
    return needs
