"""``/v1/orders/{id}/audit`` and ``/v1/audit/verify``: the audit trail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane import audit
from control_plane.deps import AdminDep, ServicesDep, ViewerDep
from control_plane.errors import NotFound

router = APIRouter(tags=["audit"])


@router.get("/v1/orders/{order_id}/audit")
def order_audit(order_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """Who made this order, where, when, and why it was late."""
    with services.store.read() as reader:
        order = reader.order(order_id)
        if order is None:
            raise NotFound(f"no order {order_id!r}")
        return audit.order_answer(
            reader, order, now=services.clock(), tolerance_s=services.settings.delay_tolerance_s
        )


@router.get("/v1/audit/verify")
def verify_chain(services: ServicesDep, _: AdminDep) -> dict[str, Any]:
    """Check the whole hash chain; reports the first broken link."""
    with services.store.read() as reader:
        result = audit.verify(reader)
    broken = (
        None
        if result.broken is None
        else {"seq": result.broken.seq, "problem": result.broken.problem}
    )
    return {"ok": result.ok, "records": result.records, "broken": broken}
