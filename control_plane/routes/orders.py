"""``/v1/orders``: idempotent intake and order lookups."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from control_plane import intake
from control_plane.deps import OperatorDep, ServicesDep, ViewerDep
from control_plane.errors import BadRequest, IdempotencyKeyMissing, NotFound
from control_plane.schemas import OrderCreate

router = APIRouter(prefix="/v1/orders", tags=["orders"])

_ORDER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": OrderCreate.model_json_schema()}},
    }
}


@router.post("", status_code=201, openapi_extra=_ORDER_BODY)
async def create_order(
    request: Request,
    services: ServicesDep,
    who: OperatorDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Accept (201), reject (422, ``reason``) or replay an order; needs ``Idempotency-Key``."""
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
    answer = await run_in_threadpool(
        intake.submit_order,
        services.store,
        order,
        key=idempotency_key,
        body_hash=intake.request_hash(data),
        now=services.clock(),
        actor=who.name,
        settings=services.settings,
    )
    services.metrics.orders.labels(answer.outcome, answer.reason or "").inc()
    headers = {"Idempotent-Replayed": "true"} if answer.outcome == "replayed" else None
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type=answer.media_type,
        headers=headers,
    )


@router.get("")
def list_orders(
    services: ServicesDep,
    _: ViewerDep,
    status: str | None = None,
    kitchen_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    """Orders in intake order; pass ``next_cursor`` back as ``cursor`` for the next page."""
    with services.store.read() as reader:
        rows = reader.orders(
            status=status, kitchen_id=kitchen_id, limit=limit, after_position=int(cursor or 0)
        )
        orders = [intake.order_view(reader, row) for row in rows]
    next_cursor = str(rows[-1]["position"]) if len(rows) == limit else None
    return {"orders": orders, "next_cursor": next_cursor}


@router.get("/{order_id}")
def get_order(order_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    with services.store.read() as reader:
        row = reader.order(order_id)
        if row is None:
            raise NotFound(f"no order {order_id!r}")
        return intake.order_view(reader, row)
