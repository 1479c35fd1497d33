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
from tests.fixtures_cp import store_before

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


def store_answer(
    store: Store, *, key: str, body_hash: str, created_at: float, scope: str = "ops"
) -> None:
    with store.write() as tx:
        tx.insert_idempotency_answer(
            scope=scope,
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
    with keys.hold("ops", "k"), pytest.raises(IdempotencyKeyInFlight), keys.hold("ops", "k"):
        pass


def test_another_operators_equal_key_is_not_in_flight() -> None:
    """Keys are the operator's own: the same key from another operator runs at once."""
    keys = KeysInFlight()
    with keys.hold("dispatch", "k"), keys.hold("kiosk", "k"):
        assert ("dispatch", "k") in keys and ("kiosk", "k") in keys


def test_a_key_is_free_again_when_its_request_ends() -> None:
    """Holding a key ends with its request, even when the request failed."""
    keys = KeysInFlight()
    with pytest.raises(RuntimeError), keys.hold("ops", "k"):
        raise RuntimeError("planning failed")
    assert ("ops", "k") not in keys


def test_different_body_for_a_stored_key_is_reuse(store: Store, settings: Settings) -> None:
    """A different body under an answered key is refused as reuse."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0)
    with store.read() as reader, pytest.raises(IdempotencyKeyReuse):
        stored_answer(reader, scope="ops", key="k", body_hash="h2", now=1.0, settings=settings)


def test_another_operators_answer_is_neither_replayed_nor_reuse(
    store: Store, settings: Settings
) -> None:
    """An equal key stored by another operator is unknown here, whatever the body."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0, scope="dispatch")
    with store.read() as reader:
        same = stored_answer(
            reader, scope="kiosk", key="k", body_hash="h1", now=1.0, settings=settings
        )
        other = stored_answer(
            reader, scope="kiosk", key="k", body_hash="h2", now=1.0, settings=settings
        )
    assert (same, other) == (None, None)


def test_completed_key_replays_the_stored_answer(store: Store, settings: Settings) -> None:
    """An hour later the stored status and body come back unchanged."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0)
    with store.read() as reader:
        replay = stored_answer(
            reader, scope="ops", key="k", body_hash="h1", now=3600.0, settings=settings
        )
    assert replay is not None
    assert (replay.status, replay.body, replay.outcome) == (201, b'{"id":"o-1"}', "replayed")


def test_answers_are_kept_a_day_then_forgotten(store: Store, settings: Settings) -> None:
    """Within 24 h the key replays; after the retention it is new again, and purged."""
    store_answer(store, key="k", body_hash="h1", created_at=0.0)
    day = 24 * 3600.0
    with store.read() as reader:
        kept = stored_answer(
            reader, scope="ops", key="k", body_hash="h1", now=day - 1, settings=settings
        )
        gone = stored_answer(
            reader, scope="ops", key="k", body_hash="h2", now=day + 1, settings=settings
        )
    purged = purge_expired_keys(store, now=day + 1, settings=settings)
    assert (kept is not None, gone, purged) == (True, None, 1)


def test_retention_is_at_least_a_day() -> None:
    """Settings refuse an idempotency retention shorter than 24 hours."""
    with pytest.raises(ValueError, match="idempotency_retention_s"):
        Settings(db_path=Path("x.db"), idempotency_retention_s=3600)


def test_answers_stored_before_scoping_belong_to_the_operator_the_audit_names(
    tmp_path: Path, settings: Settings
) -> None:
    """Migrating a store from before 0012: a stored answer gets the operator who placed its
    order (from the audit trail) and still replays for them only; an answer whose order the
    audit does not name can no longer be replayed by anyone."""
    path = tmp_path / "old.db"
    conn = store_before(path, "0012_idempotency_scope")
    conn.execute(
        "INSERT INTO orders (id, idempotency_key, status, promised_by, destination,"
        " transport_min, priority, created_at, updated_at)"
        " VALUES ('o-1', 'k-known', 'accepted', 100.0, 'store-1', 0, 'normal', 1.0, 1.0)"
    )
    conn.execute(
        "INSERT INTO audit (at, actor_type, actor_id, action, subject_type, subject_id,"
        " order_id, details_json, prev_hash, hash) VALUES (1.0, 'operator', 'dispatch',"
        " 'order.accepted', 'order', 'o-1', 'o-1', '{}', '', '')"
    )
    conn.executemany(
        "INSERT INTO idempotency_keys (key, request_hash, state, response_status,"
        " response_media_type, response_body, created_at, completed_at)"
        " VALUES (?, 'h1', 'done', 201, 'application/json', ?, 1.0, 1.0)",
        [("k-known", b'{"id":"o-1"}'), ("k-orphan", b'{"id":"o-0"}')],
    )
    conn.close()
    store = Store.open(path)
    try:
        with store.read() as reader:
            mine = stored_answer(
                reader, scope="dispatch", key="k-known", body_hash="h1", now=2.0, settings=settings
            )
            theirs = stored_answer(
                reader, scope="kiosk", key="k-known", body_hash="h1", now=2.0, settings=settings
            )
            orphan = stored_answer(
                reader, scope="dispatch", key="k-orphan", body_hash="h1", now=2.0, settings=settings
            )
    finally:
        store.close()
    assert mine is not None and mine.body == b'{"id":"o-1"}'
    assert (theirs, orphan) == (None, None)
