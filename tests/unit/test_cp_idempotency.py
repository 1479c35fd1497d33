"""Idempotency keys: canonical request hashing and the claim/replay rules on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.config import Settings
from control_plane.errors import IdempotencyKeyInFlight, IdempotencyKeyReuse
from control_plane.intake import KeysInFlight, purge_expired_keys, request_hash, stored_answer
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
    return Settings(db_path=tmp_path / "cp.db")


def store_answer(store: Store, *, key: str, body_hash: str, created_at: float) -> None:
    with store.write() as tx:
        tx.insert_idempotency_answer(
            key=key,
            request_hash=body_hash,
            response_status=201,
            response_media_type="application/json",
            response_body=b'{"id":"o-1"}',
            created_at=created_at,
        )


def test_a_key_in_flight_refuses_a_second_request() -> None:
    """While the first request holds the key, the same key gets in-flight (409)."""
    keys = KeysInFlight()
    with keys.hold("k"), pytest.raises(IdempotencyKeyInFlight), keys.hold("k"):
        pass


def test_a_key_is_free_again_when_its_request_ends() -> None:
    """Holding a key ends with its request, even when the request failed."""
    keys = KeysInFlight()
    with pytest.raises(RuntimeError), keys.hold("k"):
        raise RuntimeError("planning failed")
    assert "k" not in keys


def test_different_body_for_a_stored_key_is_reuse(store: Store, settings: Settings) -> None:
    """A different body under an answered key is refused as reuse."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0)
    with store.read() as reader, pytest.raises(IdempotencyKeyReuse):
        stored_answer(reader, key="k", body_hash="h2", now=1.0, settings=settings)


def test_completed_key_replays_the_stored_answer(store: Store, settings: Settings) -> None:
    """An hour later the stored status and body come back unchanged."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0)
    with store.read() as reader:
        replay = stored_answer(reader, key="k", body_hash="h1", now=3600.0, settings=settings)
    assert replay is not None
    assert (replay.status, replay.body, replay.outcome) == (201, b'{"id":"o-1"}', "replayed")


def test_answers_are_kept_a_day_then_forgotten(store: Store, settings: Settings) -> None:
    """Within 24 h the key replays; after the retention it is new again, and purged."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0)
    day = 24 * 3600.0
    with store.read() as reader:
        kept = stored_answer(reader, key="k", body_hash="h1", now=day - 1, settings=settings)
        gone = stored_answer(reader, key="k", body_hash="h2", now=day + 1, settings=settings)
    purged = purge_expired_keys(store, now=day + 1, settings=settings)
    assert (kept is not None, gone, purged) == (True, None, 1)


def test_retention_is_at_least_a_day() -> None:
    """Settings refuse an idempotency retention shorter than 24 hours."""
    with pytest.raises(ValueError, match="idempotency_retention_s"):
        Settings(db_path=Path("x.db"), idempotency_retention_s=3600)
