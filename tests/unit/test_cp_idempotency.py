"""Idempotency keys: canonical request hashing and the claim/replay rules on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.config import Settings
from control_plane.errors import IdempotencyKeyInFlight, IdempotencyKeyReuse
from control_plane.intake import claim_key, request_hash
from control_plane.store import Store

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_hash_ignores_key_order(body: dict[str, object]) -> None:
    """The same object with its keys in another order hashes the same."""
    assert request_hash(body) == request_hash(dict(reversed(list(body.items()))))


def test_hash_differs_for_different_bodies() -> None:
    """Any change of value changes the hash."""
    assert request_hash({"quantity": 1}) != request_hash({"quantity": 2})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cp.db")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db", idempotency_stale_s=60)


def test_first_claim_wins_and_a_second_is_in_flight(store: Store, settings: Settings) -> None:
    """While the first request holds the key, the same request gets in-flight."""
    assert claim_key(store, key="k", body_hash="h1", now=0.0, settings=settings) is None
    with pytest.raises(IdempotencyKeyInFlight):
        claim_key(store, key="k", body_hash="h1", now=1.0, settings=settings)


def test_different_body_for_a_claimed_key_is_reuse(store: Store, settings: Settings) -> None:
    """A different body under the same key is refused as reuse."""
    claim_key(store, key="k", body_hash="h1", now=0.0, settings=settings)
    with pytest.raises(IdempotencyKeyReuse):
        claim_key(store, key="k", body_hash="h2", now=1.0, settings=settings)


def test_completed_key_replays_the_stored_answer(store: Store, settings: Settings) -> None:
    """After completion the stored status and body come back unchanged."""
    claim_key(store, key="k", body_hash="h1", now=0.0, settings=settings)
    with store.write() as tx:
        tx.complete_idempotency_key(
            key="k",
            response_status=201,
            response_media_type="application/json",
            response_body=b'{"id":"o-1"}',
            completed_at=0.5,
        )
    replay = claim_key(store, key="k", body_hash="h1", now=3600.0, settings=settings)
    assert replay is not None
    assert (replay.status, replay.body, replay.outcome) == (201, b'{"id":"o-1"}', "replayed")


def test_a_crashed_claim_can_be_reclaimed_after_the_stale_timeout(
    store: Store, settings: Settings
) -> None:
    """A key left in flight by a request that never committed is free again later."""
    claim_key(store, key="k", body_hash="h1", now=0.0, settings=settings)
    assert claim_key(store, key="k", body_hash="h1", now=61.0, settings=settings) is None


def test_retention_is_at_least_a_day() -> None:
    """Settings refuse an idempotency retention shorter than 24 hours."""
    with pytest.raises(ValueError, match="idempotency_retention_s"):
        Settings(db_path=Path("x.db"), idempotency_retention_s=3600)
