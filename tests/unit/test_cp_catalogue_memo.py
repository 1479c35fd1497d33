"""Views derived from the catalogue are kept per catalogue version, on a real SQLite store: any
change to kitchens, stations, SKUs or operator tokens (by this store, or another process's)
makes the next read derive them again; a change rolled back leaves nothing reusable; intake
and authentication see a change at once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane import auth, catalogue, intake
from control_plane.config import Settings
from control_plane.errors import Unauthorized
from control_plane.migrations import MIGRATIONS
from control_plane.queries import Reader
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate, SkuUpdate, StationUpdate
from control_plane.store import Store

T0 = 1_800_000_000.0
SKU = {
    "id": "soup",
    "name": "Soup",
    "station_id": "stove",
    "steps": [{"name": "simmer", "equipment_kind": "oven", "duration_s": 300}],
    "freshness_window_min": 60,
}


SHORTER = SkuUpdate.model_validate(
    {k: v for k, v in SKU.items() if k not in ("id", "station_id")} | {"freshness_window_min": 15}
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    instance = Store.open(settings.db_path)
    kitchen = {"id": "k1", "name": "K1", "stations": [{"id": "stove", "name": "S", "slots": 4}]}
    catalogue.create_kitchen(instance, KitchenCreate.model_validate(kitchen), now=T0, actor="t")
    catalogue.create_sku(instance, SkuCreate.model_validate(SKU), now=T0, actor="t")
    try:
        yield instance
    finally:
        instance.close()


class Counting:
    """A derivation that counts how often it really ran."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, reader: Reader) -> Callable[[], tuple[int, ...]]:
        def build() -> tuple[int, ...]:
            self.runs += 1
            return tuple(int(row["slots"]) for row in reader.stations())

        return build


def derive(store: Store, counting: Counting) -> tuple[int, ...]:
    with store.read() as reader:
        return reader.memoized("slots", counting(reader))


def test_a_view_is_derived_once_while_the_catalogue_is_unchanged(store: Store) -> None:
    counting = Counting()
    assert derive(store, counting) == (4,)
    assert derive(store, counting) == (4,)
    with store.write() as tx:  # a write elsewhere (not the catalogue) changes nothing
        tx.purge_idempotency_keys(created_before=0.0)
    assert derive(store, counting) == (4,)
    assert counting.runs == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda s: catalogue.update_station(
            s, "k1", "stove", StationUpdate(slots=6), now=T0, actor="t"
        ),
        lambda s: catalogue.set_kitchen_status(s, "k1", "paused", now=T0, actor="t"),
        lambda s: catalogue.update_sku(s, "soup", SHORTER, now=T0, actor="t"),
        lambda s: auth.create_api_token(s, role="viewer", name="wall", now=T0),
    ],
    ids=["station", "kitchen", "sku", "token"],
)
def test_any_change_to_the_catalogue_derives_again(
    store: Store, change: Callable[[Store], object]
) -> None:
    counting = Counting()
    derive(store, counting)
    change(store)
    derive(store, counting)
    assert counting.runs == 2


def test_a_change_by_another_store_on_the_file_is_seen(store: Store, settings: Settings) -> None:
    """Another process (here: a second Store on the same file) changes a station."""
    counting = Counting()
    assert derive(store, counting) == (4,)
    other = Store(settings.db_path)
    try:
        catalogue.update_station(other, "k1", "stove", StationUpdate(slots=9), now=T0, actor="t")
    finally:
        other.close()
    assert derive(store, counting) == (9,)


def test_a_view_derived_in_a_change_rolled_back_is_never_reused(store: Store) -> None:
    counting = Counting()

    class Abort(Exception):
        pass

    with pytest.raises(Abort), store.write() as tx:
        tx.update_station(kitchen_id="k1", station_id="stove", name="S", slots=7)
        assert tx.memoized("slots", counting(tx)) == (7,)
        raise Abort
    # A different change, committed: whatever version it gets, the rolled-back view is gone.
    catalogue.update_station(store, "k1", "stove", StationUpdate(slots=5), now=T0, actor="t")
    assert derive(store, counting) == (5,)
    with store.read() as reader:
        assert tuple(int(r["slots"]) for r in reader.stations()) == (5,)


def _order(transport_min: float) -> OrderCreate:
    return OrderCreate.model_validate(
        {
            "items": [{"sku_id": "soup", "quantity": 1}],
            "promised_by": datetime.fromtimestamp(T0 + 3 * 3600, UTC).isoformat(),
            "destination": "store-1",
            "transport_min": transport_min,
        }
    )


def _submit(store: Store, settings: Settings, order: OrderCreate) -> intake.IntakeAnswer:
    key = str(uuid.uuid4())
    return intake.submit_order(
        store,
        order,
        key=key,
        body_hash=key,
        now=T0,
        actor="t",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )


def test_intake_plans_with_the_catalogue_as_it_is_now(store: Store, settings: Settings) -> None:
    assert _submit(store, settings, _order(20)).status == 201
    # The SKU's freshness window shrinks below the transport: the next order is refused.
    catalogue.update_sku(store, "soup", SHORTER, now=T0, actor="t")
    refused = _submit(store, settings, _order(20))
    assert (refused.status, refused.reason) == (422, "freshness_infeasible")
    # The kitchen is paused: nothing can make it.
    catalogue.set_kitchen_status(store, "k1", "paused", now=T0, actor="t")
    paused = _submit(store, settings, _order(5))
    assert paused.status == 422
    assert paused.reason != "freshness_infeasible"


def test_a_new_token_works_at_once_and_an_unknown_one_never_does(store: Store) -> None:
    with store.read() as reader, pytest.raises(Unauthorized):
        auth.authenticate_operator(reader, "bt_not-a-token")
    token = auth.create_api_token(store, role="operator", name="dispatch", now=T0)
    for _ in range(2):
        with store.read() as reader:
            assert auth.authenticate_operator(reader, token).name == "dispatch"
            with pytest.raises(Unauthorized):
                auth.authenticate_operator(reader, "bt_not-a-token")


def test_every_catalogue_table_changes_the_version_and_a_migration_does_too(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve triggers (insert, update, delete on four tables); applying a migration forgets
    what was derived, as it may change catalogue rows without firing them (here: a column
    added with a default)."""
    with store.read() as reader:
        rows = reader._all(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'"
            " AND name LIKE 'catalogue_version_on_%'"
        )
    assert sorted(str(r[0]) for r in rows) == sorted(
        [t for t in ("api_tokens", "kitchens", "skus", "stations") for _ in range(3)]
    )
    counting = Counting()
    derive(store, counting)
    derive(store, counting)
    later = ("9999_station_colour", "ALTER TABLE stations ADD COLUMN colour TEXT DEFAULT 'red'")
    monkeypatch.setattr("control_plane.store.MIGRATIONS", (*MIGRATIONS, later))
    assert store.migrate() == ["9999_station_colour"]
    derive(store, counting)
    assert counting.runs == 2
