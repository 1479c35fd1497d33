"""Credentials over a real store with a fixed clock: roles, enrollment expiry, revocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane import auth, catalogue
from control_plane.errors import AgentRevoked, EnrollmentTokenRefused, Forbidden, Unauthorized
from control_plane.schemas import KitchenCreate
from control_plane.store import Store
from protocol.sync_api import EnrollRequest

T0 = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store with kitchen k1."""
    instance = Store.open(tmp_path / "cp.db")
    kitchen = {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "Grill"}]}
    catalogue.create_kitchen(instance, KitchenCreate.model_validate(kitchen), now=T0, actor="test")
    return instance


def enroll(store: Store, token: str, now: float) -> str:
    request = EnrollRequest(token=token, name="box", agent_version="1")
    return auth.enroll(store, request, now=now).credential


def test_tokens_are_stored_only_as_hashes(store: Store) -> None:
    """The plain API token appears nowhere in the database file."""
    token = auth.create_api_token(store, role="viewer", name="wall", now=T0)
    store.close()
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    assert all(token.encode() not in f.read_bytes() for f in files if f.exists())
    assert auth.hash_secret(token).encode() in store.path.read_bytes()


def test_roles_are_ordered_viewer_operator_admin(store: Store) -> None:
    """An operator token passes viewer and operator checks and fails the admin one."""
    token = auth.create_api_token(store, role="operator", name="dispatch", now=T0)
    with store.read() as reader:
        operator = auth.authenticate_operator(reader, token)
    assert auth.require_role(operator, "viewer") is operator
    assert auth.require_role(operator, "operator") is operator
    with pytest.raises(Forbidden, match="admin"):
        auth.require_role(operator, "admin")


def test_enrollment_token_expires(store: Store) -> None:
    """Redeeming after the TTL is refused with reason token_expired."""
    token, expires_at = auth.create_enrollment_token(
        store, kitchen_id="k1", ttl_s=3600, now=T0, actor="test"
    )
    assert expires_at == T0 + 3600
    with pytest.raises(EnrollmentTokenRefused) as refused:
        enroll(store, token, now=T0 + 3600)
    assert refused.value.reason == "token_expired"


def test_enrollment_token_is_single_use(store: Store) -> None:
    """The second redemption is refused with reason token_used."""
    token, _ = auth.create_enrollment_token(store, kitchen_id="k1", ttl_s=60, now=T0, actor="t")
    enroll(store, token, now=T0 + 1)
    with pytest.raises(EnrollmentTokenRefused) as refused:
        enroll(store, token, now=T0 + 2)
    assert refused.value.reason == "token_used"


def test_agent_credential_is_scoped_and_revocable(store: Store) -> None:
    """An agent acts for its token's kitchen, is refused by the operator API, and once revoked
    is refused everywhere with 403."""
    token, _ = auth.create_enrollment_token(store, kitchen_id="k1", ttl_s=60, now=T0, actor="t")
    credential = enroll(store, token, now=T0)
    with store.read() as reader:
        agent = auth.authenticate_agent(reader, credential)
        with pytest.raises(Forbidden):
            auth.authenticate_operator(reader, credential)
    assert agent.kitchen_id == "k1"
    auth.revoke_agent(store, agent_id=agent.agent_id, now=T0 + 5, actor="admin")
    with store.read() as reader, pytest.raises(AgentRevoked):
        auth.authenticate_agent(reader, credential)


def test_missing_or_unknown_credentials_are_unauthorized(store: Store) -> None:
    """No token and an unknown token are both 401, never 403."""
    with store.read() as reader:
        for token in (None, "brg_unknown"):
            with pytest.raises(Unauthorized):
                auth.authenticate_operator(reader, token)
            with pytest.raises(Unauthorized):
                auth.authenticate_agent(reader, token)
