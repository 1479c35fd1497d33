"""Leases over a real SQLite store with a controlled clock: grant, renew, redeliver, reclaim."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane import auth, catalogue, intake, reconcile
from control_plane.config import Settings
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate
from control_plane.store import Store
from protocol.events import EventEnvelope
from protocol.sync_api import EnrollRequest, Heartbeat, LeaseRenewal, SyncRequest, SyncResponse

T0 = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Tasks placed as early as possible, so the order's task is leasable at once.
    return Settings(
        db_path=tmp_path / "cp.db",
        start_by_grace_s=120,
        lease_horizon_s=600,
        planning_mode="asap",
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    """A store with kitchen k1 (station grill), SKU burger and one accepted order."""
    instance = Store.open(settings.db_path)
    catalogue.create_kitchen(
        instance,
        KitchenCreate.model_validate(
            {"id": "k1", "name": "K1", "stations": [{"id": "grill", "name": "Grill"}]}
        ),
        now=T0,
        actor="test",
    )
    catalogue.create_sku(
        instance,
        SkuCreate.model_validate(
            {
                "id": "burger",
                "name": "Burger",
                "station_id": "grill",
                "steps": [{"name": "grill", "equipment_kind": "grill", "duration_s": 300}],
                "freshness_window_min": 30,
            }
        ),
        now=T0,
        actor="test",
    )
    order = OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": 1}],
            "promised_by": datetime.fromtimestamp(T0 + 1200, UTC).isoformat(),
            "destination": "store-1",
        }
    )
    answer = intake.submit_order(
        instance,
        order,
        key="o-1",
        body_hash="h",
        now=T0,
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    assert answer.status == 201
    return instance


@pytest.fixture
def agent(store: Store) -> auth.AgentIdentity:
    token, _ = auth.create_enrollment_token(
        store, kitchen_id="k1", ttl_s=3600, now=T0, actor="test"
    )
    enrolled = auth.enroll(store, EnrollRequest(token=token, name="box", agent_version="1"), now=T0)
    with store.read() as reader:
        return auth.authenticate_agent(reader, enrolled.credential)


def sync_at(
    store: Store,
    agent: auth.AgentIdentity,
    settings: Settings,
    now: float,
    *,
    renewals: list[LeaseRenewal] | None = None,
    events: list[EventEnvelope] | None = None,
    sent_at: float | None = None,
) -> SyncResponse:
    """A sync received at ``now``, built by the agent at ``sent_at`` (default: ``now``)."""
    request = SyncRequest(
        heartbeat=Heartbeat(
            agent_version="1", sent_at=now if sent_at is None else sent_at, outbox_depth=0
        ),
        renewals=renewals or [],
        events=events or [],
        want_leases=4,
    )
    response, _stats = reconcile.sync(store, agent, request, now=now, settings=settings)
    return response


def task_state(store: Store) -> tuple[str, int]:
    with store.read() as reader:
        (task,) = reader.tasks_of_order(
            reader.orders(status=None, kitchen_id=None, limit=1, after_position=0)[0]["id"]
        )
    return str(task["state"]), int(task["fencing_token"])


def test_lease_start_by_is_the_grace_after_now(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A lease granted 10 s after start_after must start within the grace from now."""
    (lease,) = sync_at(store, agent, settings, T0 + 10).leases
    assert (lease.fencing_token, lease.start_by, lease.start_within_s) == (1, T0 + 130, 120)


def test_renewed_lease_is_kept_and_not_sent_again(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """An agent that renews its lease keeps it; the answer carries no new lease."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    renewal = LeaseRenewal(task_id=lease.task_id, fencing_token=lease.fencing_token)
    answer = sync_at(store, agent, settings, T0 + 5, renewals=[renewal])
    assert (answer.leases, answer.lost_leases) == ([], [])
    assert task_state(store) == ("leased", 1)


def test_unrenewed_lease_is_redelivered_unchanged_before_start_by(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """If the answer carrying a lease was lost, the next sync sends the same lease again."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    (again,) = sync_at(store, agent, settings, T0 + 30).leases
    assert (again.task_id, again.fencing_token, again.start_by) == (
        lease.task_id,
        1,
        lease.start_by,
    )
    assert again.start_within_s == pytest.approx(90)


def test_unrenewed_lease_past_start_by_is_taken_back_and_fenced(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """Past start-by with no start and no renewal, the task is re-leased under a new token."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    (fresh,) = sync_at(store, agent, settings, T0 + 500).leases
    assert (fresh.task_id, fresh.fencing_token) == (lease.task_id, 2)
    assert fresh.start_by == T0 + 620


def test_stale_request_built_before_the_lease_does_not_reclaim_it(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """A request built before the lease existed, delivered late past start-by and after newer
    requests, speaks for no lease: it does not take it back; a fresh request then does."""
    (lease,) = sync_at(store, agent, settings, T0).leases
    sync_at(store, agent, settings, T0 + 500, sent_at=T0 - 1)
    assert task_state(store) == ("leased", 1)
    (fresh,) = sync_at(store, agent, settings, T0 + 510).leases
    assert (fresh.task_id, fresh.fencing_token) == (lease.task_id, 2)


def test_request_built_before_start_by_and_delayed_past_it_does_not_reclaim(
    store: Store, agent: auth.AgentIdentity, settings: Settings
) -> None:
    """An in-order request built while the lease could still start, delivered after its
    start-by, cannot show the agent did not start it: the task stays leased."""
    sync_at(store, agent, settings, T0)
    sync_at(store, agent, settings, T0 + 500, sent_at=T0 + 100)
    assert task_state(store) == ("leased", 1)
