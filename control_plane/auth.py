"""Credentials: operator API tokens with roles, agent credentials, one-time enrollment tokens.

Every secret is random with at least 256 bits of entropy, shown once, and stored only as its
SHA-256 (a slow password hash buys nothing against guessing a 256-bit secret). ``401`` means
"we do not know who you are"; ``403`` means "we know, and you may not".

>>> hash_secret("brg_example")[:16]
'140da670a9c1d2c7'
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from control_plane import audit
from control_plane.audit import iso
from control_plane.errors import (
    AgentRevoked,
    EnrollmentTokenRefused,
    Forbidden,
    NotFound,
    Unauthorized,
)
from control_plane.queries import Reader
from control_plane.store import Store
from protocol.sync_api import EnrollRequest, EnrollResponse

ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}


def hash_secret(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    """A fresh secret, prefixed so a leaked one is recognisable (``brg_``, ``brga_``, ``brge_``)."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Operator:
    """The holder of an operator API token."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass(frozen=True)
class AgentIdentity:
    """An enrolled, unrevoked agent; it may act only for ``kitchen_id``."""

    agent_id: str
    kitchen_id: str
    last_acked_seq: int


def create_api_token(
    store: Store, *, role: str, name: str, now: float, actor: tuple[str, str] = ("system", "cli")
) -> str:
    """Mint an operator token; the plain token is returned once and never stored."""
    if role not in ROLE_RANK:
        raise ValueError(f"role must be one of {', '.join(ROLE_RANK)}, not {role!r}")
    token = new_secret("brg_")
    with store.write() as tx:
        tx.insert_api_token(token_hash=hash_secret(token), name=name, role=role, created_at=now)
        audit.append(
            tx,
            at=now,
            actor_type=actor[0],
            actor_id=actor[1],
            action="api_token.created",
            subject_type="api_token",
            subject_id=name,
            details={"role": role},
        )
    return token


def authenticate_operator(reader: Reader, token: str | None) -> Operator:
    """The operator behind ``token``, or :class:`Unauthorized` / :class:`Forbidden`."""
    if not token:
        raise Unauthorized("send 'Authorization: Bearer <api token>'")
    digest = hash_secret(token)
    # Known tokens only are kept: a flood of made-up ones must not crowd them out.
    operator = reader.memoized(
        ("operator", digest), partial(_operator, reader, digest), keep=lambda op: op is not None
    )
    if operator is not None:
        return operator
    if reader.agent_by_credential(digest) is not None:
        raise Forbidden("agent credentials may use only the /v1/agents endpoints")
    raise Unauthorized("unknown API token")


def require_role(operator: Operator, role: str) -> Operator:
    if not operator.allows(role):
        raise Forbidden(f"this needs the {role} role; the token has {operator.role}")
    return operator


def _operator(reader: Reader, digest: str) -> Operator | None:
    row = reader.api_token(digest)
    return None if row is None else Operator(name=str(row["name"]), role=str(row["role"]))


def authenticate_agent(reader: Reader, credential: str | None) -> AgentIdentity:
    """The agent behind ``credential``; a revoked agent gets :class:`AgentRevoked`."""
    if not credential:
        raise Unauthorized("send 'Authorization: Bearer <agent credential>'")
    row = reader.agent_by_credential(hash_secret(credential))
    if row is None:
        raise Unauthorized("unknown agent credential; enroll the agent again")
    if row["revoked"]:
        raise AgentRevoked(f"agent {row['id']} has been revoked")
    return AgentIdentity(
        agent_id=str(row["id"]),
        kitchen_id=str(row["kitchen_id"]),
        last_acked_seq=int(row["last_acked_seq"]),
    )


def token_id(token_hash: str) -> str:
    """The public id of a stored secret: a prefix of its hash, safe to show and log."""
    return token_hash[:16]


def enrollment_token_view(row: sqlite3.Row, *, now: float) -> dict[str, Any]:
    """One enrollment token as an admin sees it (never the token itself)."""
    state = (
        "used"
        if row["used_at"] is not None
        else "expired"
        if row["expires_at"] <= now
        else "unused"
    )
    return {
        "id": token_id(str(row["token_hash"])),
        "kitchen_id": row["kitchen_id"],
        "created_at": iso(row["created_at"]),
        "expires_at": iso(row["expires_at"]),
        "state": state,
        "used_at": iso(row["used_at"]),
        "used_by_agent_id": row["used_by_agent_id"],
    }


def create_enrollment_token(
    store: Store, *, kitchen_id: str, ttl_s: float, now: float, actor: str
) -> tuple[str, float]:
    """A single-use token that enrolls one agent into ``kitchen_id`` before it expires."""
    token = new_secret("brge_")
    expires_at = now + ttl_s
    with store.write() as tx:
        if tx.kitchen(kitchen_id) is None:
            raise NotFound(f"no kitchen {kitchen_id!r}")
        tx.insert_enrollment_token(
            token_hash=hash_secret(token),
            kitchen_id=kitchen_id,
            expires_at=expires_at,
            created_at=now,
        )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="enrollment_token.created",
            subject_type="kitchen",
            subject_id=kitchen_id,
            kitchen_id=kitchen_id,
            details={"expires_at": expires_at},
        )
    return token, expires_at


def enroll(store: Store, request: EnrollRequest, *, now: float) -> EnrollResponse:
    """Redeem an enrollment token: a new agent id and credential, shown once."""
    digest = hash_secret(request.token)
    agent_id = "agent-" + uuid.uuid4().hex[:16]
    credential = new_secret("brga_")
    with store.write() as tx:
        row = tx.enrollment_token(digest)
        if row is None:
            raise Unauthorized("unknown enrollment token")
        if row["used_at"] is not None:
            raise EnrollmentTokenRefused(
                "this enrollment token was already used; ask for a new one",
                reason="token_used",
            )
        if row["expires_at"] <= now:
            raise EnrollmentTokenRefused(
                "this enrollment token has expired; ask for a new one", reason="token_expired"
            )
        kitchen_id = str(row["kitchen_id"])
        tx.use_enrollment_token(token_hash=digest, used_at=now, agent_id=agent_id)
        tx.insert_agent(
            agent_id=agent_id,
            kitchen_id=kitchen_id,
            name=request.name,
            credential_hash=hash_secret(credential),
            agent_version=request.agent_version,
            enrolled_at=now,
        )
        audit.append(
            tx,
            at=now,
            actor_type="agent",
            actor_id=agent_id,
            action="agent.enrolled",
            subject_type="agent",
            subject_id=agent_id,
            kitchen_id=kitchen_id,
            details={"name": request.name, "agent_version": request.agent_version},
        )
    return EnrollResponse(
        agent_id=agent_id, kitchen_id=kitchen_id, credential=credential, server_time=now
    )


def revoke_agent(store: Store, *, agent_id: str, now: float, actor: str) -> None:
    """Refuse ``agent_id`` from now on (its syncs get 403)."""
    with store.write() as tx:
        row = tx.agent(agent_id)
        if row is None:
            raise NotFound(f"no agent {agent_id!r}")
        if row["revoked"]:
            return  # already refused; revoking again changes nothing
        tx.set_agent_revoked(agent_id=agent_id, revoked=True, at=now)
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="agent.revoked",
            subject_type="agent",
            subject_id=agent_id,
            kitchen_id=str(row["kitchen_id"]),
        )
