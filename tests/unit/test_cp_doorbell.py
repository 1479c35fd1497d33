"""The work doorbell (``GET /v1/agents/work``): per-kitchen versions, waiters woken from other
threads, one waiter per agent, and the route in-process (auth, scope, intake and cancellation
ringing it)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane import auth, catalogue, intake, leases, orders
from control_plane.app import create_app
from control_plane.config import Settings
from control_plane.doorbell import WorkDoorbell, WorkSignal, next_lease_at, ring_kitchens
from control_plane.schemas import KitchenCreate, OrderCreate, SkuCreate
from control_plane.store import Store
from protocol.sync_api import EnrollRequest, WorkResponse
from tests.unit.test_cp_replan_stock import T0 as REPLAN_T0
from tests.unit.test_cp_replan_stock import add_kitchen, pause_k1_and_tick, place

#: Long enough that a test passing by timeout instead of a wakeup would be obvious.
LONG_WAIT_S = 10.0


def wait_in_task(
    bell: WorkDoorbell, *, agent_id: str = "a1", kitchen_id: str = "k1", timeout_s: float
) -> asyncio.Task[WorkSignal]:
    return asyncio.ensure_future(
        bell.wait(
            agent_id=agent_id,
            kitchen_id=kitchen_id,
            since=bell.version(kitchen_id),
            timeout_s=timeout_s,
        )
    )


async def until_waiting(bell: WorkDoorbell, count: int) -> None:
    deadline = time.monotonic() + 5
    while bell.waiting != count:
        assert time.monotonic() < deadline, f"{bell.waiting} waiters, expected {count}"
        await asyncio.sleep(0.001)


# -- the doorbell --------------------------------------------------------------------------------


def test_a_ring_from_another_thread_wakes_the_waiter_at_once() -> None:
    """A ring from a worker thread ends a 10 s wait within a fraction of a second, changed."""

    async def main() -> tuple[WorkSignal, float]:
        bell = WorkDoorbell(epoch="e")
        waiting = wait_in_task(bell, timeout_s=LONG_WAIT_S)
        await until_waiting(bell, 1)
        started = time.monotonic()
        ringer = threading.Thread(target=bell.ring, args=(["k1"],))
        ringer.start()
        signal = await waiting
        ringer.join()
        return signal, time.monotonic() - started

    signal, took = asyncio.run(main())
    assert signal == WorkSignal("e.1", True, "rung")
    assert took < 1.0


def test_a_wait_without_a_ring_times_out_unchanged() -> None:
    """No ring: the wait ends after its timeout with the same version, not changed."""

    async def main() -> WorkSignal:
        bell = WorkDoorbell(epoch="e")
        return await wait_in_task(bell, timeout_s=0.05)

    assert asyncio.run(main()) == WorkSignal("e.0", False, "timeout")


def test_a_ring_for_another_kitchen_does_not_wake_the_waiter() -> None:
    """Only the waiter's own kitchen counts."""

    async def main() -> tuple[WorkSignal, str]:
        bell = WorkDoorbell(epoch="e")
        waiting = wait_in_task(bell, timeout_s=0.2)
        await until_waiting(bell, 1)
        bell.ring(["k2"])
        return await waiting, bell.version("k2")

    signal, other = asyncio.run(main())
    assert (signal.changed, signal.woke, other) == (False, "timeout", "e.1")


def test_a_version_of_another_epoch_is_answered_at_once_as_changed() -> None:
    """After a restart (a new epoch) the agent's version differs: answered at once, changed,
    even though the new process's counter is back where the old one was."""
    before = WorkDoorbell()
    after = WorkDoorbell()
    assert before.epoch != after.epoch

    async def main() -> WorkSignal:
        return await after.wait(
            agent_id="a1", kitchen_id="k1", since=before.version("k1"), timeout_s=LONG_WAIT_S
        )

    started = time.monotonic()
    signal = asyncio.run(main())
    assert (signal.version, signal.changed) == (after.version("k1"), True)
    assert time.monotonic() - started < 1.0


def test_a_first_wait_without_a_version_is_answered_at_once() -> None:
    """An agent that holds no version yet learns the current one at once."""

    async def main() -> WorkSignal:
        return await WorkDoorbell(epoch="e").wait(
            agent_id="a1", kitchen_id="k1", since=None, timeout_s=LONG_WAIT_S
        )

    assert asyncio.run(main()) == WorkSignal("e.0", True, "changed")


def test_a_second_wait_of_the_same_agent_ends_the_first() -> None:
    """The first wait is answered at once, ``replaced``; only the second stays waiting."""

    async def main() -> tuple[WorkSignal, int]:
        bell = WorkDoorbell(epoch="e")
        first = wait_in_task(bell, timeout_s=LONG_WAIT_S)
        await until_waiting(bell, 1)
        second = wait_in_task(bell, timeout_s=LONG_WAIT_S)
        replaced = await asyncio.wait_for(first, timeout=1.0)
        still = bell.waiting
        bell.ring(["k1"])
        await second
        return replaced, still

    replaced, still = asyncio.run(main())
    assert (replaced.changed, replaced.woke, still) == (False, "replaced", 1)


def test_waiters_never_outnumber_the_agents() -> None:
    """Five waits from two agents leave two waiters; all of them end, and none is left."""

    async def main() -> tuple[int, int]:
        bell = WorkDoorbell(epoch="e")
        tasks = [
            wait_in_task(bell, agent_id=agent_id, timeout_s=LONG_WAIT_S)
            for agent_id in ("a1", "a2", "a1", "a2", "a1")
        ]
        await asyncio.sleep(0.01)
        held = bell.waiting
        bell.ring(["k1"])
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=1.0)
        return held, bell.waiting

    assert asyncio.run(main()) == (2, 0)


def test_a_cancelled_wait_leaves_no_waiter() -> None:
    """A request that goes away (its task cancelled) takes its waiter with it."""

    async def main() -> int:
        bell = WorkDoorbell(epoch="e")
        waiting = wait_in_task(bell, timeout_s=LONG_WAIT_S)
        await until_waiting(bell, 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return bell.waiting

    assert asyncio.run(main()) == 0


def test_evicting_an_agent_ends_its_wait() -> None:
    """A revoked agent's held request is answered at once, ``evicted``."""

    async def main() -> WorkSignal:
        bell = WorkDoorbell(epoch="e")
        waiting = wait_in_task(bell, timeout_s=LONG_WAIT_S)
        await until_waiting(bell, 1)
        assert bell.evict("a1")
        return await asyncio.wait_for(waiting, timeout=1.0)

    assert asyncio.run(main()).woke == "evicted"


def test_ring_kitchens_rings_every_doorbell_of_the_process() -> None:
    """The module-level ring reaches every live doorbell; ``None`` ids are skipped."""
    first, second = WorkDoorbell(epoch="a"), WorkDoorbell(epoch="b")
    ring_kitchens(["k-ring", None])
    assert (first.version("k-ring"), second.version("k-ring")) == ("a.1", "b.1")


def test_next_lease_at_skips_tasks_already_in_the_horizon() -> None:
    """Tasks leasable now are the agent's to take at its sync; the next one still to enter
    the horizon gives the time."""
    assert next_lease_at([10.0, 650.0, 900.0], now=0.0, horizon_s=600.0) == 50.0
    assert next_lease_at([10.0, 600.0], now=0.0, horizon_s=600.0) is None
    assert next_lease_at([], now=0.0, horizon_s=600.0) is None


@given(
    starts=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False)),
    now=st.floats(min_value=0, max_value=1e6),
)
def test_next_lease_at_is_the_earliest_entry_still_ahead(starts: list[float], now: float) -> None:
    """Property: the answer is in the future, is some task's entry, and no entry between now
    and it is missed."""
    at = next_lease_at(starts, now=now, horizon_s=600.0)
    ahead = [s - 600.0 for s in starts if s - 600.0 > now]
    assert at == (min(ahead) if ahead else None)


def test_a_task_moved_by_re_planning_rings_both_kitchens(tmp_path: Path) -> None:
    """k1 pauses and the control loop moves its task to k2: both kitchens' versions move (k1's
    agent may hold nothing of it any more, k2's has new work)."""
    settings = Settings(db_path=tmp_path / "cp.db", backpressure_min_dwell_s=0)
    store = Store.open(settings.db_path)
    try:
        add_kitchen(store, "k1")
        sku = {
            "id": "burger",
            "name": "Burger",
            "station_id": "grill",
            "steps": [{"name": "grill", "duration_s": 300}],
            "freshness_window_min": 60,
        }
        catalogue.create_sku(store, SkuCreate.model_validate(sku), now=REPLAN_T0, actor="t")
        order = place(store, settings, quantity=1)
        add_kitchen(store, "k2")
        bell = WorkDoorbell(epoch="r")
        pause_k1_and_tick(store, settings)
        with store.read() as reader:
            (task,) = reader.tasks_of_order(order["id"])
    finally:
        store.close()
    assert task["kitchen_id"] == "k2"
    assert (bell.version("k1"), bell.version("k2")) == ("r.1", "r.1")


# -- the route, in-process ------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cp.db")


@pytest.fixture
def credentials(settings: Settings) -> Iterator[dict[str, str]]:
    """Kitchens k1 and k2 (a grill each), SKU burger; one agent credential per kitchen."""
    store = Store.open(settings.db_path)
    now = time.time()
    try:
        for kitchen_id in ("k1", "k2"):
            kitchen = {
                "id": kitchen_id,
                "name": kitchen_id,
                "stations": [{"id": "grill", "name": "Grill", "slots": 4}],
            }
            catalogue.create_kitchen(
                store, KitchenCreate.model_validate(kitchen), now=now, actor="t"
            )
        sku = {
            "id": "burger",
            "name": "Burger",
            "station_id": "grill",
            "steps": [{"name": "grill", "duration_s": 300}],
            "freshness_window_min": 30,
        }
        catalogue.create_sku(store, SkuCreate.model_validate(sku), now=now, actor="t")
        found = {}
        for kitchen_id in ("k1", "k2"):
            token, _ = auth.create_enrollment_token(
                store, kitchen_id=kitchen_id, ttl_s=3600, now=now, actor="t"
            )
            request = EnrollRequest(token=token, name="box", agent_version="1")
            found[kitchen_id] = auth.enroll(store, request, now=now).credential
        found["admin"] = auth.create_api_token(store, role="admin", name="ops", now=now)
    finally:
        store.close()
    yield found


def order_for_k1(promised_in_s: float) -> OrderCreate:
    promised_by = datetime.fromtimestamp(time.time() + promised_in_s, UTC)
    return OrderCreate.model_validate(
        {
            "items": [{"sku_id": "burger", "quantity": 1}],
            "promised_by": promised_by.isoformat(),
            "destination": "store-1",
            "transport_min": 10,
        }
    )


def submit(store: Store, settings: Settings, order: OrderCreate) -> intake.IntakeAnswer:
    key = str(uuid.uuid4())
    answer = intake.submit_order(
        store,
        order,
        key=key,
        body_hash=key,
        now=time.time(),
        actor="test",
        settings=settings,
        in_flight=intake.KeysInFlight(),
    )
    assert answer.status == 201, answer.body
    return answer


def doorbell_get(
    client: httpx.AsyncClient, credential: str, **params: Any
) -> Coroutine[Any, Any, httpx.Response]:
    return client.get(
        "/v1/agents/work", params=params, headers={"Authorization": f"Bearer {credential}"}
    )


def with_app(settings: Settings, scenario: Any) -> Any:
    """Run ``scenario(client, store)`` against the app in-process and return what it returns."""

    async def main() -> Any:
        store = Store.open(settings.db_path)
        try:
            transport = httpx.ASGITransport(app=create_app(settings, store=store))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://cp", timeout=30
            ) as client:
                return await scenario(client, store)
        finally:
            store.close()

    return asyncio.run(main())


def test_an_accepted_order_wakes_its_kitchens_agent_at_once(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """An agent waiting with its current version hears of an order for its kitchen within a
    fraction of a second, changed, with when the task enters the lease horizon."""

    async def scenario(client: httpx.AsyncClient, store: Store) -> tuple[WorkResponse, float]:
        first = WorkResponse.model_validate_json(
            (await doorbell_get(client, credentials["k1"])).content
        )
        waiting = asyncio.ensure_future(
            doorbell_get(client, credentials["k1"], since=first.version, wait_s=LONG_WAIT_S)
        )
        await asyncio.sleep(0.05)
        started = time.monotonic()
        # Planned just in time for a promise 3 h out: its task enters the horizon later.
        await asyncio.to_thread(submit, store, settings, order_for_k1(3 * 3600))
        answer = await waiting
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        woken = WorkResponse.model_validate_json(answer.content)
        assert woken.version != first.version
        return woken, took

    woken, took = with_app(settings, scenario)
    assert woken.changed
    assert took < 1.0
    assert woken.next_lease_at is not None
    assert woken.server_time < woken.next_lease_at < woken.server_time + 3 * 3600


def test_another_kitchens_order_does_not_wake_the_agent(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """k2's agent waits out its short wait unchanged while an order goes to k1."""

    async def scenario(client: httpx.AsyncClient, store: Store) -> WorkResponse:
        first = WorkResponse.model_validate_json(
            (await doorbell_get(client, credentials["k2"])).content
        )
        waiting = asyncio.ensure_future(
            doorbell_get(client, credentials["k2"], since=first.version, wait_s=0.3)
        )
        await asyncio.to_thread(submit, store, settings, order_for_k1(1200))
        return WorkResponse.model_validate_json((await waiting).content)

    assert not with_app(settings, scenario).changed


def test_cancelling_an_order_wakes_its_kitchens_agent(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """A cancellation withdraws tasks at the kitchen: its agent syncs to hear of it."""

    async def scenario(client: httpx.AsyncClient, store: Store) -> WorkResponse:
        answer = await asyncio.to_thread(submit, store, settings, order_for_k1(1200))
        order_id = httpx.Response(200, content=answer.body).json()["id"]
        first = WorkResponse.model_validate_json(
            (await doorbell_get(client, credentials["k1"])).content
        )
        waiting = asyncio.ensure_future(
            doorbell_get(client, credentials["k1"], since=first.version, wait_s=LONG_WAIT_S)
        )
        await asyncio.sleep(0.05)
        await asyncio.to_thread(
            orders.cancel_order, store, order_id, reason="test", now=time.time(), actor="t"
        )
        return WorkResponse.model_validate_json((await asyncio.wait_for(waiting, 2.0)).content)

    assert with_app(settings, scenario).changed


def test_an_operators_reassignment_rings_both_kitchens(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """A task reassigned from k1 to k2: k2's agent has work to lease, k1's must hear it lost it."""
    store = Store.open(settings.db_path)
    try:
        answer = submit(store, settings, order_for_k1(1200))
        order_id = httpx.Response(200, content=answer.body).json()["id"]
        with store.read() as reader:
            (task,) = reader.tasks_of_order(order_id)
        bell = WorkDoorbell(epoch="x")
        before = {k: bell.version(k) for k in ("k1", "k2")}
        leases.reassign(
            store,
            str(task["id"]),
            kitchen_id="k2" if task["kitchen_id"] == "k1" else "k1",
            reason="test",
            now=time.time(),
            actor="ops",
            unreachable_after_s=settings.agent_unreachable_after_s,
        )
    finally:
        store.close()
    assert all(bell.version(k) != before[k] for k in ("k1", "k2"))


def test_wait_s_zero_answers_at_once(settings: Settings, credentials: dict[str, str]) -> None:
    """``wait_s=0`` never holds the request, whatever the version."""

    async def scenario(client: httpx.AsyncClient, _store: Store) -> tuple[int, bool, float]:
        started = time.monotonic()
        answer = await doorbell_get(client, credentials["k1"], since="other.0", wait_s=0)
        again = await doorbell_get(
            client, credentials["k1"], since=answer.json()["version"], wait_s=0
        )
        return again.status_code, again.json()["changed"], time.monotonic() - started

    status, changed, took = with_app(settings, scenario)
    assert (status, changed) == (200, False)
    assert took < 1.0


def test_the_doorbell_is_refused_outside_the_agents_kitchen(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """403 problem for another kitchen's doorbell; 401 for an operator's token or none."""

    async def scenario(client: httpx.AsyncClient, _store: Store) -> list[httpx.Response]:
        return [
            await doorbell_get(client, credentials["k1"], kitchen_id="k2", wait_s=0),
            await doorbell_get(client, credentials["admin"], wait_s=0),
            await client.get("/v1/agents/work", params={"wait_s": 0}),
        ]

    forbidden, operator, anonymous = with_app(settings, scenario)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"].startswith("application/problem+json")
    assert (operator.status_code, anonymous.status_code) == (401, 401)


def test_revoking_an_agent_ends_its_wait_and_refuses_the_next(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """The held request is answered at once with 403; so is the next one."""

    async def scenario(client: httpx.AsyncClient, _store: Store) -> tuple[int, int, float]:
        first = await doorbell_get(client, credentials["k1"])
        waiting = asyncio.ensure_future(
            doorbell_get(client, credentials["k1"], since=first.json()["version"], wait_s=20)
        )
        await asyncio.sleep(0.05)
        agents = await client.get(
            "/v1/agents", headers={"Authorization": f"Bearer {credentials['admin']}"}
        )
        agent_id = next(a["id"] for a in agents.json()["agents"] if a["kitchen_id"] == "k1")
        started = time.monotonic()
        revoked = await client.post(
            f"/v1/agents/{agent_id}/revoke",
            headers={"Authorization": f"Bearer {credentials['admin']}"},
        )
        assert revoked.status_code == 204
        held = await asyncio.wait_for(waiting, 2.0)
        took = time.monotonic() - started
        after = await doorbell_get(client, credentials["k1"], wait_s=0)
        return held.status_code, after.status_code, took

    held, after, took = with_app(settings, scenario)
    assert (held, after) == (403, 403)
    assert took < 1.0


def test_wakeups_are_counted_by_why_they_ended(
    settings: Settings, credentials: dict[str, str]
) -> None:
    """The metrics say how doorbell waits ended, and how many wait now."""

    async def scenario(client: httpx.AsyncClient, _store: Store) -> str:
        first = await doorbell_get(client, credentials["k1"])
        await doorbell_get(client, credentials["k1"], since=first.json()["version"], wait_s=0.01)
        return (await client.get("/metrics")).text

    text = with_app(settings, scenario)
    assert 'brigade_doorbell_wakeups_total{woke="changed"} 1.0' in text
    assert 'brigade_doorbell_wakeups_total{woke="timeout"} 1.0' in text
    assert "brigade_doorbell_waiters 0.0" in text


def test_closing_answers_every_wait_and_each_later_one_at_once() -> None:
    """The server is stopping: held waits end unchanged (``shutdown``), new ones do not wait;
    a ring still counts for the agents' next sync after the restart."""

    async def main() -> tuple[list[WorkSignal], WorkSignal, float]:
        bell = WorkDoorbell(epoch="e")
        waits = [
            wait_in_task(bell, agent_id=f"a{n}", kitchen_id=f"k{n}", timeout_s=LONG_WAIT_S)
            for n in (1, 2)
        ]
        await until_waiting(bell, 2)
        closing = threading.Thread(target=bell.close)
        closing.start()
        held = list(await asyncio.gather(*waits))
        closing.join()
        started = time.monotonic()
        later = await wait_in_task(bell, timeout_s=LONG_WAIT_S)
        return held, later, time.monotonic() - started

    held, later, took = asyncio.run(main())
    assert [(s.changed, s.woke) for s in held] == [(False, "shutdown")] * 2
    assert (later.changed, later.woke) == (False, "shutdown")
    assert took < 1.0


def test_a_ring_wakes_only_its_kitchens_waiters_among_many() -> None:
    """Waiters are found by kitchen: of 50 agents in 50 kitchens, a ring for k7 wakes one."""

    async def main() -> tuple[int, int]:
        bell = WorkDoorbell(epoch="e")
        waits = [
            wait_in_task(bell, agent_id=f"a{n}", kitchen_id=f"k{n}", timeout_s=0.3)
            for n in range(50)
        ]
        await until_waiting(bell, 50)
        woken = bell.ring(["k7"])
        signals = await asyncio.gather(*waits)
        return woken, sum(s.woke == "rung" for s in signals)

    assert asyncio.run(main()) == (1, 1)
