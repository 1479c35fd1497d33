"""FastAPI dependencies: the app's services, the clock, and who is calling.

Routes declare what they need with the ``Annotated`` aliases below::

    @router.get("/v1/orders/{order_id}")
    def get_order(order_id: str, services: ServicesDep, _: ViewerDep) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.auth import (
    AgentIdentity,
    Operator,
    authenticate_agent,
    authenticate_operator,
    require_role,
)
from control_plane.config import Settings
from control_plane.errors import Unauthorized
from control_plane.intake import KeysInFlight, OrderWriter
from control_plane.metrics import Metrics
from control_plane.planning_state import PlanningState
from control_plane.store import Store


@dataclass(frozen=True)
class Services:
    """Everything a route may use, built once in ``create_app``."""

    settings: Settings
    store: Store
    metrics: Metrics
    clock: Callable[[], float]
    in_flight: KeysInFlight
    planning: PlanningState
    #: Decides orders in a process of its own (None: on the event loop).
    intake_writer: OrderWriter | None = None


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# The dependencies below are ``async`` although they do not await: FastAPI runs a plain ``def``
# dependency in the thread pool, one thread hop per dependency per request. The credential
# lookup is one indexed SQLite read, cheaper than the hop.
async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (None when absent)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


# Declared for the OpenAPI document (the "Authorize" button of /docs); the header itself is read
# by ``bearer_token`` so a malformed one gets our problem answer.
_operator_scheme = HTTPBearer(
    auto_error=False, scheme_name="operatorToken", description="operator API token"
)
_agent_scheme = HTTPBearer(
    auto_error=False, scheme_name="agentCredential", description="agent credential"
)
_OperatorScheme = Annotated[HTTPAuthorizationCredentials | None, Security(_operator_scheme)]
_AgentScheme = Annotated[HTTPAuthorizationCredentials | None, Security(_agent_scheme)]


def _operator_with(role: str) -> Callable[..., Awaitable[Operator]]:
    async def dependency(request: Request, _documented: _OperatorScheme) -> Operator:
        services = services_of(request)
        with services.store.read() as reader:
            operator = authenticate_operator(reader, bearer_token(request))
        return require_role(operator, role)

    return dependency


async def current_agent(request: Request, _documented: _AgentScheme) -> AgentIdentity:
    services = services_of(request)
    with services.store.read() as reader:
        return authenticate_agent(reader, bearer_token(request))


ViewerDep = Annotated[Operator, Depends(_operator_with("viewer"))]
OperatorDep = Annotated[Operator, Depends(_operator_with("operator"))]
AdminDep = Annotated[Operator, Depends(_operator_with("admin"))]
AgentDep = Annotated[AgentIdentity, Depends(current_agent)]
