"""``/v1/enrollment-tokens``: one-time tokens an installer gives ``brigade-agent enroll``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from control_plane.audit import iso
from control_plane.auth import create_enrollment_token
from control_plane.deps import AdminDep, ServicesDep
from control_plane.schemas import EnrollmentTokenCreate

router = APIRouter(prefix="/v1/enrollment-tokens", tags=["agents"])


@router.post("", status_code=201)
def create_token(
    body: EnrollmentTokenCreate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    token, expires_at = create_enrollment_token(
        services.store,
        kitchen_id=body.kitchen_id,
        ttl_s=body.ttl_s or services.settings.enrollment_ttl_s,
        now=services.clock(),
        actor=who.name,
    )
    return {"token": token, "kitchen_id": body.kitchen_id, "expires_at": iso(expires_at)}
