"""The work doorbell against a real ``brigade serve``: a held ``GET /v1/agents/work`` is answered
within a fraction of a second of an order for the agent's kitchen, and a running agent with a
long sync interval takes the new lease at once; another kitchen's doorbell and a revoked
credential get 403."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.errors import CredentialRejected
from edge_agent.links.control_plane import WorkDoorbellClient
from protocol.sync_api import WorkResponse
from tests.fixtures_cp import StartControlPlane
from tests.harness import Broker, ControlPlane, wait_until
from tests.integration.test_cp_api import order_body, place_order, ready_kitchen, setup_kitchen
from tests.integration.test_cp_sync import ScriptedAgent, enrolled_agent

#: The agents' default sync interval: the doorbell must beat it by far.
SYNC_INTERVAL_S = 2.0


@pytest.fixture
def control_plane(start_control_plane: StartControlPlane) -> ControlPlane:
    """A real ``brigade serve`` placing tasks as early as possible, so an order's task is
    leasable at once."""
    return start_control_plane(planning_mode="asap")


@pytest.fixture
def kitchen(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    """An admin client of a control plane with kitchen k1 and SKU burger."""
    with ready_kitchen(control_plane) as client:
        yield client


@pytest.fixture
def agent(control_plane: ControlPlane, kitchen: httpx.Client) -> Iterator[ScriptedAgent]:
    scripted = enrolled_agent(control_plane, kitchen)
    try:
        yield scripted
    finally:
        scripted.close()


def doorbell(control_plane: ControlPlane, agent: ScriptedAgent) -> WorkDoorbellClient:
    return WorkDoorbellClient(control_plane.url, credential=agent.identity.credential)


def test_an_order_rings_the_kitchens_doorbell_at_once(
    control_plane: ControlPlane, kitchen: httpx.Client, agent: ScriptedAgent
) -> None:
    """A held doorbell is answered, changed, well within the sync interval of the order being
    accepted; the sync it prompts gets the order's lease."""

    async def scenario() -> tuple[WorkResponse, float, bool]:
        async with doorbell(control_plane, agent) as bell:
            first = await bell.work(since=None, wait_s=0)
            waiting = asyncio.ensure_future(bell.work(since=first.version, wait_s=20))
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            held = not done  # nothing changed: the request is held
            response = await asyncio.to_thread(place_order, kitchen, order_body())
            accepted_at = time.monotonic()
            assert response.status_code == 201, response.text
            answer = await asyncio.wait_for(waiting, timeout=10)
            return answer, time.monotonic() - accepted_at, held and first.version != answer.version

    answer, took, held_then_changed = asyncio.run(scenario())
    assert answer.changed and held_then_changed
    assert took < SYNC_INTERVAL_S / 4, took
    assert len(agent.sync(want_leases=4).leases) == 1


def test_another_kitchens_doorbell_is_forbidden(
    control_plane: ControlPlane, kitchen: httpx.Client, agent: ScriptedAgent
) -> None:
    """An agent asking for another kitchen's doorbell gets a 403 problem; its own is 200."""
    setup_kitchen(kitchen, "k2")
    url = f"{control_plane.url}/v1/agents/work"
    headers = {"Authorization": f"Bearer {agent.identity.credential}"}
    other = httpx.get(url, params={"kitchen_id": "k2", "wait_s": 0}, headers=headers, timeout=10)
    own = httpx.get(url, params={"kitchen_id": "k1", "wait_s": 0}, headers=headers, timeout=10)
    assert other.status_code == 403
    assert other.headers["content-type"] == "application/problem+json"
    assert own.status_code == 200


def test_a_revoked_agent_is_refused_even_while_it_waits(
    control_plane: ControlPlane, kitchen: httpx.Client, agent: ScriptedAgent
) -> None:
    """Revocation answers the held request at once with 403, and every later one."""

    async def scenario() -> tuple[list[int | None], float]:
        async with doorbell(control_plane, agent) as bell:
            first = await bell.work(since=None, wait_s=0)
            waiting = asyncio.ensure_future(bell.work(since=first.version, wait_s=20))
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done
            revoked = await asyncio.to_thread(
                kitchen.post, f"/v1/agents/{agent.identity.agent_id}/revoke"
            )
            assert revoked.status_code == 204
            started = time.monotonic()
            statuses: list[int | None] = []
            with pytest.raises(CredentialRejected) as held:
                await asyncio.wait_for(waiting, timeout=10)
            took = time.monotonic() - started
            statuses.append(held.value.status)
            with pytest.raises(CredentialRejected) as later:
                await bell.work(since=None, wait_s=0)
            statuses.append(later.value.status)
            return statuses, took

    statuses, took = asyncio.run(scenario())
    assert statuses == [403, 403]
    assert took < 2.0


@contextmanager
def running_agent(config: AgentConfig) -> Iterator[Agent]:
    """The agent in a thread against the real server; stopped (promptly) on exit."""
    agent = Agent(config)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="agent-under-test")
    thread.start()
    try:
        wait_until(
            lambda: agent.ready.is_set() or not thread.is_alive(), timeout=30, what="agent up"
        )
        assert agent.ready.is_set(), "the agent did not start"
        yield agent
    finally:
        stop.set()
        stopping = time.monotonic()
        thread.join(timeout=30)
        assert not thread.is_alive(), "agent did not stop within 30 s"
        # A held doorbell request does not hold up the stop.
        assert time.monotonic() - stopping < 10


def test_a_running_agent_takes_new_work_long_before_its_interval(
    tmp_path: Path,
    broker: Broker,
    control_plane: ControlPlane,
    kitchen: httpx.Client,
    agent: ScriptedAgent,
) -> None:
    """An agent syncing only every 60 s holds the lease of a new order within seconds: the
    doorbell woke its sync loop."""
    config = AgentConfig(
        agent_id=agent.identity.agent_id,
        kitchen_id="k1",
        credential=agent.identity.credential,
        control_plane_url=control_plane.url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        data_dir=tmp_path / "agent-data",
        sync_interval_s=60.0,
        metrics_port=None,
    )
    with running_agent(config) as running:
        wait_until(running.sync_ok.is_set, timeout=20, what="the agent's first sync")
        store = running.store
        assert store is not None
        assert store.held_leases() == []
        response = place_order(kitchen, order_body())
        accepted_at = time.monotonic()
        assert response.status_code == 201, response.text
        task_id = response.json()["tasks"][0]["id"]
        wait_until(
            lambda: task_id in {t for t, _ in store.held_leases()},
            timeout=10,
            interval=0.01,
            what="the agent to hold the new task's lease",
        )
        took = time.monotonic() - accepted_at
    assert took < 5.0, took


def test_a_held_doorbell_does_not_hold_up_a_graceful_shutdown(
    control_plane: ControlPlane, agent: ScriptedAgent
) -> None:
    """SIGTERM while an agent holds a 20 s wait: the wait is answered (unchanged) at once and
    the server exits 0 within a couple of seconds, not after the wait's timeout."""

    async def scenario() -> tuple[WorkResponse, float, int | None]:
        async with doorbell(control_plane, agent) as bell:
            first = await bell.work(since=None, wait_s=0)
            waiting = asyncio.ensure_future(bell.work(since=first.version, wait_s=20))
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            assert not done, "the wait was answered before the stop"
            stopping = time.monotonic()
            code = await asyncio.to_thread(control_plane.process.stop)
            answer = await asyncio.wait_for(waiting, timeout=5)
            return answer, time.monotonic() - stopping, code

    answer, took, code = asyncio.run(scenario())
    assert (answer.changed, code) == (False, 0)
    assert took < 5.0, took
