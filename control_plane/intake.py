"""Order intake with ``Idempotency-Key`` semantics (SPEC guarantees 1 and 2).

1. A key is *in flight* while its first request runs; this process keeps that set in memory
   (:class:`KeysInFlight`), so a concurrent request with the same key gets ``409`` at once.
2. The order, its items, its prep tasks, their audit records **and the stored answer under the
   key** are written in one transaction: after a crash either all of it exists (a retry replays
   the answer byte for byte) or none of it does (the retry does the work). Nothing about an
   unfinished request survives a crash, so there is no stale claim to expire.
3. A retry with the same key and the same canonical body gets the stored status and body; a
   different body gets ``422``. Keys are kept ``idempotency_retention_s`` (at least 24 h).

Across several control-plane processes on one store the primary key of ``idempotency_keys``
still guarantees one order per key: the second transaction finds the first one's answer under
the write lock and replays it. Only the ``409`` for a concurrent duplicate is per process.

Rejected orders are recorded too (status ``rejected`` with the reason) and replay like the rest.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from control_plane import audit
from control_plane.audit import canonical_json
from control_plane.config import Settings
from control_plane.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReuse,
    OrderRejected,
)
from control_plane.orders import order_view
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


class KeysInFlight:
    """Idempotency keys whose first request is running in this process.

    >>> keys = KeysInFlight()
    >>> with keys.hold("k1"):
    ...     "k1" in keys
    True
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Mark ``key`` in flight for the block; :class:`IdempotencyKeyInFlight` if it is."""
        with self._lock:
            if key in self._keys:
                raise IdempotencyKeyInFlight(
                    f"the first request with Idempotency-Key {key!r} is still being processed;"
                    " retry shortly"
                )
            self._keys.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._keys.discard(key)


def stored_answer(
    reader: Reader, *, key: str, body_hash: str, now: float, settings: Settings
) -> IntakeAnswer | None:
    """The answer stored under ``key`` to replay, or None when the key is new (or expired).

    Raises :class:`IdempotencyKeyReuse` when the key was first used with a different body.
    """
    row = reader.idempotency_key(key)
    if row is None or row["created_at"] < now - settings.idempotency_retention_s:
        return None
    if row["request_hash"] != body_hash:
        raise IdempotencyKeyReuse(
            f"Idempotency-Key {key!r} was first used with a different request body;"
            " use a new key for a new order"
        )
    if row["state"] != "done":
        # A claim left by an older version of the control plane; it never committed an order.
        return None
    return IntakeAnswer(
        status=int(row["response_status"]),
        media_type=str(row["response_media_type"]),
        body=bytes(row["response_body"]),
        outcome="replayed",
    )


def submit_order(
    store: Store,
    order: OrderCreate,
    *,
    key: str,
    body_hash: str,
    now: float,
    actor: str,
    settings: Settings,
    in_flight: KeysInFlight,
) -> IntakeAnswer:
    """Accept, reject or replay one order request (see the module docstring)."""
    with in_flight.hold(key):
        with store.read() as reader:
            replay = stored_answer(reader, key=key, body_hash=body_hash, now=now, settings=settings)
        if replay is not None:
            return replay
        with store.write() as tx:
            # Checked again under the write lock: another process may have answered meanwhile.
            replay = stored_answer(tx, key=key, body_hash=body_hash, now=now, settings=settings)
            if replay is not None:
                return replay
            tx.delete_idempotency_key(key=key)  # an expired answer or an old claim
            answer = _plan_and_record(tx, order, key=key, now=now, actor=actor)
            tx.insert_idempotency_answer(
                key=key,
                request_hash=body_hash,
                response_status=answer.status,
                response_media_type=answer.media_type,
                response_body=answer.body,
                created_at=now,
            )
        return answer


def purge_expired_keys(store: Store, *, now: float, settings: Settings) -> int:
    """Forget answers older than the retention; returns how many were removed."""
    with store.write() as tx:
        return tx.purge_idempotency_keys(created_before=now - settings.idempotency_retention_s)


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
