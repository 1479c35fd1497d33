"""``/v1/enrollment-tokens`` and ``/v1/api-tokens``: credentials an admin hands out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from control_plane.audit import iso
from control_plane.auth import (
    create_api_token,
    create_enrollment_token,
    enrollment_token_view,
    hash_secret,
    token_id,
)
from control_plane.deps import AdminDep, ServicesDep
from control_plane.problems import problem_responses as errors
from control_plane.schemas import ApiTokenCreate, EnrollmentTokenCreate
from control_plane.views import ApiTokenOut, EnrollmentTokenList, EnrollmentTokenOut

router = APIRouter(tags=["credentials"], responses=errors(401, 403))


@router.post(
    "/v1/enrollment-tokens",
    status_code=201,
    response_model=EnrollmentTokenOut,
    responses=errors(404),
)
def create_token(
    body: EnrollmentTokenCreate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """A one-time token that enrolls one agent into the kitchen before it expires (admin)."""
    token, expires_at = create_enrollment_token(
        services.store,
        kitchen_id=body.kitchen_id,
        ttl_s=body.ttl_s or services.settings.enrollment_ttl_s,
        now=services.clock(),
        actor=who.name,
    )
    return {
        "token": token,
        "id": token_id(hash_secret(token)),
        "kitchen_id": body.kitchen_id,
        "expires_at": iso(expires_at),
    }


@router.get("/v1/enrollment-tokens", response_model=EnrollmentTokenList)
def list_tokens(
    services: ServicesDep,
    _: AdminDep,
    kitchen_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Enrollment tokens (never the tokens themselves) and whether each was used (admin)."""
    now = services.clock()
    with services.store.read() as reader:
        rows = reader.enrollment_tokens(kitchen_id=kitchen_id)
    return {"enrollment_tokens": [enrollment_token_view(row, now=now) for row in rows]}


@router.post("/v1/api-tokens", status_code=201, response_model=ApiTokenOut)
def create_operator_token(
    body: ApiTokenCreate, services: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Mint an operator API token with a role (admin); shown once, stored as a hash."""
    token = create_api_token(
        services.store,
        role=body.role,
        name=body.name,
        now=services.clock(),
        actor=("operator", who.name),
    )
    return {"token": token, "name": body.name, "role": body.role}
