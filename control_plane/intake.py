"""Order intake with ``Idempotency-Key`` semantics (SPEC guarantees 1 and 2).

1. The key is *claimed* in its own committed transaction (state ``in_flight``), so a concurrent
   request with the same key sees it and gets ``409``.
2. The order, its items, its prep tasks, their audit records and the stored answer are written in
   **one** transaction: after a crash either all of it exists (a retry replays the answer) or none
   of it does (the stale claim is reclaimed after ``idempotency_stale_s``).
3. A retry with the same key and the same canonical body gets the stored status and body
   byte-for-byte; a different body gets ``422``.

Rejected orders are recorded too (status ``rejected`` with the reason) and replay like the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from control_plane import audit
from control_plane.audit import canonical_json, iso
from control_plane.config import Settings
from control_plane.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReuse,
    OrderRejected,
    StoreError,
)
from control_plane.planning.planner import (
    KitchenLoad,
    OrderRequest,
    Plan,
    Rejection,
    SkuSpec,
    StationLoad,
    plan_order,
)
from control_plane.problems import PROBLEM_MEDIA_TYPE, encode_problem, error_problem
from control_plane.queries import Reader
from control_plane.schemas import OrderCreate
from control_plane.store import Store, Writer

JSON_MEDIA_TYPE = "application/json"


def request_hash(body: Any) -> str:
    """SHA-256 of the canonical JSON of a parsed request body (key order, spacing ignored)."""
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass(frozen=True)
class IntakeAnswer:
    """The HTTP answer to an order request and what happened (for metrics)."""

    status: int
    media_type: str
    body: bytes
    outcome: str  # accepted | rejected | replayed
    reason: str | None = None


def claim_key(
    store: Store, *, key: str, body_hash: str, now: float, settings: Settings
) -> IntakeAnswer | None:
    """Claim ``key`` for this request, or return the stored answer to replay.

    Raises :class:`IdempotencyKeyReuse` (different body) or :class:`IdempotencyKeyInFlight`.
    """
    with store.write() as tx:
        row = tx.idempotency_key(key)
        if row is not None:
            expired = row["created_at"] < now - settings.idempotency_retention_s
            crashed = (
                row["state"] == "in_flight"
                and row["created_at"] < now - settings.idempotency_stale_s
            )
            if expired or crashed:
                tx.delete_idempotency_key(key=key)
            elif row["request_hash"] != body_hash:
                raise IdempotencyKeyReuse(
                    f"Idempotency-Key {key!r} was first used with a different request body;"
                    " use a new key for a new order"
                )
            elif row["state"] == "in_flight":
                raise IdempotencyKeyInFlight(
                    f"the first request with Idempotency-Key {key!r} is still being processed;"
                    " retry shortly"
                )
            else:
                return IntakeAnswer(
                    status=int(row["response_status"]),
                    media_type=str(row["response_media_type"]),
                    body=bytes(row["response_body"]),
                    outcome="replayed",
                )
        tx.claim_idempotency_key(key=key, request_hash=body_hash, created_at=now)
    return None


def submit_order(
    store: Store,
    order: OrderCreate,
    *,
    key: str,
    body_hash: str,
    now: float,
    actor: str,
    settings: Settings,
) -> IntakeAnswer:
    """Accept, reject or replay one order request."""
    replay = claim_key(store, key=key, body_hash=body_hash, now=now, settings=settings)
    if replay is not None:
        return replay
    try:
        with store.write() as tx:
            answer = _plan_and_record(tx, order, key=key, now=now, actor=actor)
            tx.complete_idempotency_key(
                key=key,
                response_status=answer.status,
                response_media_type=answer.media_type,
                response_body=answer.body,
                completed_at=now,
            )
            tx.purge_idempotency_keys(created_before=now - settings.idempotency_retention_s)
    except BaseException:
        # Nothing was committed: free the key so the client's retry can do the work. If even
        # that fails, the claim goes stale and is reclaimed after ``idempotency_stale_s``.
        with contextlib.suppress(StoreError), store.write() as tx:
            tx.delete_idempotency_key(key=key)
        raise
    return answer


def _kitchen_loads(reader: Reader) -> list[KitchenLoad]:
    open_work = {
        (row["kitchen_id"], row["station_id"]): float(row["open_work_s"])
        for row in reader.station_open_work()
    }
    stations: dict[str, list[StationLoad]] = {}
    for row in reader.stations():
        stations.setdefault(row["kitchen_id"], []).append(
            StationLoad(
                station_id=row["id"],
                slots=int(row["slots"]),
                open_work_s=open_work.get((row["kitchen_id"], row["id"]), 0.0),
            )
        )
    return [
        KitchenLoad(row["id"], row["status"], tuple(stations.get(row["id"], ())))
        for row in reader.kitchens()
    ]


def _sku_specs(reader: Reader, sku_ids: set[str]) -> dict[str, SkuSpec]:
    specs = {}
    for sku_id in sorted(sku_ids):
        row = reader.sku(sku_id)
        if row is not None:
            specs[sku_id] = SkuSpec(
                sku_id=sku_id,
                station_id=row["station_id"],
                duration_s=float(row["total_duration_s"]),
                freshness_window_min=float(row["freshness_window_min"]),
            )
    return specs


def _plan_and_record(
    tx: Writer, order: OrderCreate, *, key: str, now: float, actor: str
) -> IntakeAnswer:
    request = OrderRequest(
        items=tuple((item.sku_id, item.quantity) for item in order.items),
        promised_by=order.promised_by_ts,
        transport_min=order.transport_min,
    )
    decision = plan_order(
        now, request, _kitchen_loads(tx), _sku_specs(tx, {i.sku_id for i in order.items})
    )
    order_id = "ord-" + uuid.uuid4().hex
    plan = decision if isinstance(decision, Plan) else None
    tx.insert_order(
        order_id=order_id,
        idempotency_key=key,
        status="planned" if plan else "rejected",
        reason=decision.reason if isinstance(decision, Rejection) else None,
        kitchen_id=plan.kitchen_id if plan else None,
        promised_by=request.promised_by,
        destination=order.destination,
        transport_min=order.transport_min,
        priority=order.priority,
        predicted_ready_at=plan.predicted_ready_at if plan else None,
        created_at=now,
    )
    for line, item in enumerate(order.items):
        tx.insert_order_item(
            order_id=order_id, line=line, sku_id=item.sku_id, quantity=item.quantity
        )
    if isinstance(decision, Rejection):
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="order.rejected",
            subject_type="order",
            subject_id=order_id,
            order_id=order_id,
            reason=decision.reason,
            details={"detail": decision.detail, "idempotency_key": key},
        )
        error = OrderRejected(decision.detail, reason=decision.reason)
        body = error_problem(error) | {"order_id": order_id}
        return IntakeAnswer(422, PROBLEM_MEDIA_TYPE, encode_problem(body), "rejected", error.reason)
    _record_plan(tx, decision, order_id=order_id, key=key, now=now, actor=actor)
    order_row = tx.order(order_id)
    assert order_row is not None
    body_bytes = json.dumps(order_view(tx, order_row), separators=(",", ":")).encode()
    return IntakeAnswer(201, JSON_MEDIA_TYPE, body_bytes, "accepted")


def _record_plan(
    tx: Writer, plan: Plan, *, order_id: str, key: str, now: float, actor: str
) -> None:
    audit.append(
        tx,
        at=now,
        actor_type="operator",
        actor_id=actor,
        action="order.accepted",
        subject_type="order",
        subject_id=order_id,
        order_id=order_id,
        kitchen_id=plan.kitchen_id,
        details={"predicted_ready_at": plan.predicted_ready_at, "idempotency_key": key},
    )
    for task in plan.tasks:
        task_id = "task-" + uuid.uuid4().hex
        tx.insert_task(
            task_id=task_id,
            kitchen_id=plan.kitchen_id,
            station_id=task.station_id,
            sku_id=task.sku_id,
            quantity=task.quantity,
            duration_s=task.duration_s,
            start_after=task.start_after,
            finish_by=task.finish_by,
            predicted_ready_at=task.predicted_ready_at,
            created_at=now,
        )
        tx.link_task_order(task_id=task_id, order_id=order_id)
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="planner",
            action="task.planned",
            subject_type="task",
            subject_id=task_id,
            order_id=order_id,
            kitchen_id=plan.kitchen_id,
            station_id=task.station_id,
            details={
                "sku_id": task.sku_id,
                "quantity": task.quantity,
                "start_after": task.start_after,
                "finish_by": task.finish_by,
                "predicted_ready_at": task.predicted_ready_at,
            },
        )


def task_view(row: sqlite3.Row) -> dict[str, Any]:
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
        "start_by": iso(row["start_by"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
    }


def order_view(reader: Reader, row: sqlite3.Row) -> dict[str, Any]:
    """One order as the operators' API shows it."""
    order_id = str(row["id"])
    return {
        "id": order_id,
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
        "items": [
            {"sku_id": item["sku_id"], "quantity": item["quantity"]}
            for item in reader.order_items(order_id)
        ],
        "tasks": [task_view(task) for task in reader.tasks_of_order(order_id)],
    }
