"""Orders and prep tasks after intake: how the API shows them, and cancellation.

Cancelling an order (SPEC guarantee 4: the control plane is authoritative on cancellations):

* its ``planned`` tasks are cancelled outright;
* its ``leased`` tasks are cancelled and the lease holder is told on its next sync (a
  :class:`protocol.sync_api.Cancellation` in answer to its renewal), so it never starts them;
* its ``started`` tasks are cancelled too, but the kitchen may be cooking them (it may be
  offline): when it reports them done, the food is recorded as waste, in audit and metrics;
* food of its ``done`` tasks is recorded as waste at once;
* the ingredient stock reserved for tasks that were never started is given back, once.

Cancelling a cancelled order again answers the order unchanged (a safe retry).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from control_plane import audit, stock
from control_plane.audit import iso
from control_plane.doorbell import ring_kitchens
from control_plane.errors import NotFound, StateConflict
from control_plane.fleet import task_is_stranded
from control_plane.planning.sla import Prediction
from control_plane.queries import Reader
from control_plane.store import Store

#: A row as read (``sqlite3.Row``) or as just written (a dict of the same columns).
RowLike = sqlite3.Row | Mapping[str, Any]

#: Order statuses from which an order can still be cancelled.
CANCELLABLE = ("accepted", "planned", "in_prep")


def task_view(row: RowLike, *, stranded: bool = False) -> dict[str, Any]:
    """One prep task as the operators' API shows it."""
    return {
        "id": row["id"],
        "sku_id": row["sku_id"],
        "quantity": row["quantity"],
        "state": row["state"],
        "kitchen_id": row["kitchen_id"],
        "station_id": row["station_id"],
        "start_after": iso(row["start_after"]),
        "finish_by": iso(row["finish_by"]),
        "predicted_ready_at": iso(row["predicted_ready_at"]),
        "fencing_token": row["fencing_token"],
        "lease_agent_id": row["lease_agent_id"],
        "start_by": iso(row["start_by"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "cancel_reason": row["cancel_reason"],
        "wasted_quantity": row["wasted_quantity"],
        "reassigned_at": iso(row["reassigned_at"]),
        "stranded": stranded,
    }


def task_view_at(
    reader: Reader, row: sqlite3.Row, *, now: float, unreachable_after_s: float
) -> dict[str, Any]:
    """:func:`task_view` with the ``stranded`` flag computed for ``now``."""
    flag = task_is_stranded(reader, row, now=now, unreachable_after_s=unreachable_after_s)
    return task_view(row, stranded=flag)


def _finite_iso(ts: float) -> str | None:
    return iso(ts) if math.isfinite(ts) else None


def prediction_view(prediction: Prediction | None) -> dict[str, Any] | None:
    """The SLA engine's prediction of an order as the API shows it (None: not evaluated)."""
    if prediction is None:
        return None
    return {
        "ready_p50": _finite_iso(prediction.ready_p50),
        "ready_p90": _finite_iso(prediction.ready_p90),
        "handover_at": _finite_iso(prediction.handover_at),
        "margin_s": prediction.margin_s if math.isfinite(prediction.margin_s) else None,
        "miss_probability": prediction.miss_probability,
        "at_risk": prediction.margin_s < 0,
        "cause": prediction.cause,
    }


def order_view(
    reader: Reader,
    row: sqlite3.Row,
    *,
    now: float | None = None,
    unreachable_after_s: float = 0.0,
    prediction: Prediction | None = None,
) -> dict[str, Any]:
    """One order as the operators' API shows it; with ``now``, tasks carry ``stranded``;
    ``prediction`` is the SLA engine's latest for it (from the control loop)."""
    order_id = str(row["id"])
    tasks = reader.tasks_of_order(order_id)
    return order_view_of(
        row,
        reader.order_items(order_id),
        [
            task_view(task)
            if now is None
            else task_view_at(reader, task, now=now, unreachable_after_s=unreachable_after_s)
            for task in tasks
        ],
        prediction=prediction,
    )


def order_view_of(
    row: RowLike,
    items: Iterable[RowLike],
    tasks: list[dict[str, Any]],
    *,
    prediction: Prediction | None = None,
) -> dict[str, Any]:
    """:func:`order_view` from the order's columns, its items' and its tasks' views (intake
    builds its 201 from what it has just written, without reading it back)."""
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "reason": row["reason"],
        "kitchen_id": row["kitchen_id"],
        "predicted_ready_at": iso(row["predicted_ready_at"]),
        "promised_by": iso(row["promised_by"]),
        "destination": row["destination"],
        "transport_min": row["transport_min"],
        "priority": row["priority"],
        "created_at": iso(row["created_at"]),
        "ready_at": iso(row["ready_at"]),
        "items": [{"sku_id": item["sku_id"], "quantity": item["quantity"]} for item in items],
        "tasks": tasks,
        "prediction": prediction_view(prediction),
    }


@dataclass(frozen=True)
class Cancelled:
    """The order after cancellation, and how many tasks' food became waste at once."""

    order: dict[str, Any]
    wasted_tasks: int


def cancel_order(store: Store, order_id: str, *, reason: str, now: float, actor: str) -> Cancelled:
    """Cancel an order and its open tasks (see the module docstring); once committed, the work
    doorbells of the kitchens whose tasks were withdrawn ring, so a lease holder hears of the
    cancellation at its next sync, at once, rather than after its interval."""
    touched: set[str] = set()
    cancelled = _cancel(store, order_id, reason=reason, now=now, actor=actor, touched=touched)
    ring_kitchens(touched)
    return cancelled


def _cancel(
    store: Store, order_id: str, *, reason: str, now: float, actor: str, touched: set[str]
) -> Cancelled:
    """:func:`cancel_order` in one write transaction; adds to ``touched`` the kitchens of the
    tasks it withdrew."""
    wasted = 0
    with store.write() as tx:
        order = tx.order(order_id)
        if order is None:
            raise NotFound(f"no order {order_id!r}")
        if order["status"] == "cancelled":
            return Cancelled(order_view(tx, order), 0)
        if order["status"] not in CANCELLABLE:
            raise StateConflict(
                f"order {order_id} is {order['status']}; only {', '.join(CANCELLABLE)} orders"
                " can be cancelled",
                reason="order_not_cancellable",
            )
        tx.set_order_status(order_id=order_id, status="cancelled", at=now, reason=reason)
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="order.cancelled",
            subject_type="order",
            subject_id=order_id,
            order_id=order_id,
            kitchen_id=order["kitchen_id"],
            reason=reason,
            details={"previous_status": order["status"]},
        )
        never_started: list[str] = []
        for task in tx.tasks_of_order(order_id):
            others_open = any(
                other != order_id
                and (row := tx.order(other)) is not None
                and row["status"] != "cancelled"
                for other in tx.order_ids_of_task(str(task["id"]))
            )
            if others_open:
                continue  # the batch still serves another order
            # Only a planned task is known not to be cooking. A leased one may have started in
            # a kitchen that has not reported it yet: its stock is given back once it is known
            # unstarted (start-by passed while the agent reported no start, or the agent
            # released or failed it unstarted; leases.release_cancelled_unstarted, reconcile).
            if task["state"] == "planned":
                never_started.append(str(task["id"]))
            if task["state"] in ("planned", "leased", "started"):
                touched.add(str(task["kitchen_id"]))
            wasted += _cancel_task(tx, task, order_id=order_id, now=now, actor=actor)
        stock.release(tx, task_ids=never_started, now=now, actor=actor)
        updated = tx.order(order_id)
        assert updated is not None
        return Cancelled(order_view(tx, updated), wasted)


def _cancel_task(tx: Any, task: sqlite3.Row, *, order_id: str, now: float, actor: str) -> int:
    state = str(task["state"])
    common = {
        "subject_type": "task",
        "subject_id": str(task["id"]),
        "order_id": order_id,
        "kitchen_id": task["kitchen_id"],
        "station_id": task["station_id"],
    }
    if state == "done":
        tx.set_task_wasted(
            task_id=task["id"], quantity=task["quantity"], finished_at=task["finished_at"], at=now
        )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="task.wasted",
            reason="order_cancelled",
            details={"quantity": task["quantity"], "sku_id": task["sku_id"]},
            **common,
        )
        return 1
    if state not in ("planned", "leased", "started"):
        return 0
    tx.cancel_task(task_id=task["id"], reason="order_cancelled", at=now)
    audit.append(
        tx,
        at=now,
        actor_type="operator",
        actor_id=actor,
        action="task.cancelled",
        reason="order_cancelled",
        details={
            "previous_state": state,
            "lease_agent_id": task["lease_agent_id"],
            "fencing_token": task["fencing_token"],
            # A started task may be cooking in a kitchen that cannot hear us yet.
            "kitchen_may_be_cooking": state == "started",
        },
        **common,
    )
    return 0
