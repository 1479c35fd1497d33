"""``/v1/orders``: idempotent intake, lookups, cancellation."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from control_plane import intake, orders
from control_plane.deps import OperatorDep, ServicesDep, ViewerDep
from control_plane.errors import BadRequest, IdempotencyKeyMissing, NotFound
from control_plane.problems import problem_responses as errors
from control_plane.schemas import OrderCancel, OrderCreate
from control_plane.views import OrderOut, OrderPage, OrderStatus

router = APIRouter(prefix="/v1/orders", tags=["orders"], responses=errors(401, 403))

# The body is parsed by the route itself (its canonical form is hashed for the idempotency
# check), so its schema is declared here for the OpenAPI document.
_ORDER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": OrderCreate.model_json_schema()}},
    }
}


@router.post(
    "",
    status_code=201,
    openapi_extra=_ORDER_BODY,
    response_model=OrderOut,
    responses={
        201: {
            "description": "Accepted and planned (or the replay of an earlier answer, with"
            " `Idempotent-Replayed: true`)"
        },
        **errors(400, 409, 422, 429, 503),
    },
)
async def create_order(
    request: Request,
    services: ServicesDep,
    who: OperatorDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Accept (201), reject (422 ``order-rejected`` with ``reason``) or replay an order.

    Needs an ``Idempotency-Key``: the same key and body replay the first answer; the same key
    with another body is 422 ``idempotency-key-reuse``; while the first request runs, 409.
    Under backpressure: ``shed`` answers 429 ``orders-shed`` with ``Retry-After`` (not kept
    under the key, so the same key may be retried); ``throttle`` refuses low priority with 422
    ``backpressure_throttle`` and ``offered_promised_by``, a later promise that may be accepted.
    """
    if not idempotency_key or not idempotency_key.strip():
        raise IdempotencyKeyMissing(
            "POST /v1/orders needs an Idempotency-Key header (e.g. a UUID) so retries are safe"
        )
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not UTF-8 JSON: {exc}") from exc
    try:
        order = OrderCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]
        ) from exc
    # On the event loop: a worker thread per order would trade the GIL with the loop at every
    # SQL statement (see Store.submit_on_loop).
    answer = await intake.submit_order_on_loop(
        services.store,
        order,
        key=idempotency_key,
        body_hash=intake.request_hash(data),
        now=services.clock(),
        actor=who.name,
        settings=services.settings,
        in_flight=services.in_flight,
        planning=services.planning,
        writer=services.intake_writer,
    )
    services.metrics.orders.labels(answer.outcome, answer.reason or "").inc()
    headers = dict(answer.headers or {})
    if answer.outcome == "replayed":
        headers["Idempotent-Replayed"] = "true"
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type=answer.media_type,
        headers=headers or None,
    )


@router.get("", response_model=OrderPage)
def list_orders(
    services: ServicesDep,
    _: ViewerDep,
    status: OrderStatus | None = None,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    """Orders in intake order; pass ``next_cursor`` back as ``cursor`` for the next page."""
    now = services.clock()
    with services.store.read() as reader:
        rows = reader.orders(
            status=status, kitchen_id=kitchen_id, limit=limit, after_position=int(cursor or 0)
        )
        views = [
            orders.order_view(
                reader,
                row,
                now=now,
                unreachable_after_s=services.settings.agent_unreachable_after_s,
                prediction=services.planning.prediction(str(row["id"])),
            )
            for row in rows
        ]
    next_cursor = str(rows[-1]["position"]) if len(rows) == limit else None
    return {"orders": views, "next_cursor": next_cursor}


@router.get("/{order_id}", response_model=OrderOut, responses=errors(404))
def get_order(order_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """One order with its items, prep tasks and (once the control loop has evaluated it) its
    SLA prediction and risk."""
    with services.store.read() as reader:
        row = reader.order(order_id)
        if row is None:
            raise NotFound(f"no order {order_id!r}")
        return orders.order_view(
            reader,
            row,
            now=services.clock(),
            unreachable_after_s=services.settings.agent_unreachable_after_s,
            prediction=services.planning.prediction(order_id),
        )


@router.post("/{order_id}/cancel", response_model=OrderOut, responses=errors(404, 409))
def cancel_order(
    order_id: str, services: ServicesDep, who: OperatorDep, body: OrderCancel | None = None
) -> dict[str, Any]:
    """Cancel an order (operator): its unstarted tasks are withdrawn (the kitchen hears on its
    next sync); food cooked for it anyway is recorded as waste. Repeating it is harmless."""
    reason = (body or OrderCancel()).reason
    cancelled = orders.cancel_order(
        services.store, order_id, reason=reason, now=services.clock(), actor=who.name
    )
    if cancelled.order["status"] == "cancelled":
        services.metrics.orders_cancelled.inc()
    services.metrics.wasted_tasks.labels("at_cancel").inc(cancelled.wasted_tasks)
    return cancelled.order
