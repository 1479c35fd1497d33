"""``/v1/audit``, ``/v1/orders/{id}/audit`` and ``/v1/audit/verify``: the audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from control_plane import audit
from control_plane.deps import AdminDep, ServicesDep, ViewerDep
from control_plane.errors import NotFound
from control_plane.problems import problem_responses as errors
from control_plane.views import AuditPage, AuditVerification, OrderAudit

router = APIRouter(tags=["audit"], responses=errors(401, 403))


@router.get("/v1/orders/{order_id}/audit", response_model=OrderAudit, responses=errors(404))
def order_audit(order_id: str, services: ServicesDep, _: ViewerDep) -> dict[str, Any]:
    """Who made this order, where, when, and why it was late, in one answer."""
    with services.store.read() as reader:
        order = reader.order(order_id)
        if order is None:
            raise NotFound(f"no order {order_id!r}")
        return audit.order_answer(
            reader, order, now=services.clock(), tolerance_s=services.settings.delay_tolerance_s
        )


@router.get("/v1/audit", response_model=AuditPage)
def audit_records(
    services: ServicesDep,
    _: ViewerDep,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order_id: Annotated[str | None, Query(max_length=128)] = None,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
    subject_type: Annotated[str | None, Query(max_length=64)] = None,
    subject_id: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Audit records in chain order, filtered; pass ``next_after_seq`` as ``after_seq``."""
    with services.store.read() as reader:
        rows = reader.audit_page(
            after_seq=after_seq,
            limit=limit,
            order_id=order_id,
            kitchen_id=kitchen_id,
            subject_type=subject_type,
            subject_id=subject_id,
            action=action,
        )
    next_after = int(rows[-1]["seq"]) if len(rows) == limit else None
    return {"records": [audit.record_view(row) for row in rows], "next_after_seq": next_after}


@router.get("/v1/audit/verify", response_model=AuditVerification)
def verify_chain(services: ServicesDep, _: AdminDep) -> dict[str, Any]:
    """Check the whole hash chain (admin); reports the first broken link."""
    with services.store.read() as reader:
        result = audit.verify(reader)
    broken = (
        None
        if result.broken is None
        else {"seq": result.broken.seq, "problem": result.broken.problem}
    )
    return {"ok": result.ok, "records": result.records, "broken": broken}
