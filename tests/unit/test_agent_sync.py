"""One sync round trip against the shipped fake control plane, with a real SQLite store; and the
work doorbell's watch, which wakes the sync loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import SystemClock
from edge_agent.errors import ControlPlaneError, ControlPlaneUnreachable, RetryLater
from edge_agent.executor import RunState
from edge_agent.links.control_plane import ControlPlaneClient
from edge_agent.store import Store
from edge_agent.sync import DoorbellWatch, SyncCycle
from edge_agent.testing import FakeControlPlane
from protocol import Lease, RecipeStep, SyncResponse, WorkResponse


@dataclass
class FakeClock:
    """Time that moves only when told to (and by a fixed amount per monotonic read)."""

    mono: float = 1000.0
    wall_time: float = 1_767_225_600.0
    step: float = 0.0

    def monotonic(self) -> float:
        value = self.mono
        self.mono += self.step
        return value

    def wall(self) -> float:
        return self.wall_time


def lease(task_id: str = "t1", start_within_s: float = 90.0) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id="k1",
        station_id="s1",
        sku_id="pie",
        sku_name="Pie",
        quantity=1,
        order_ids=["o1"],
        steps=[RecipeStep(index=0, name="bake", equipment_kind="oven", duration_s=5)],
        fencing_token=3,
        start_after=0,
        finish_by=2e9,
        start_by=2e9,
        start_within_s=start_within_s,
    )


@pytest.fixture
def fake() -> FakeControlPlane:
    return FakeControlPlane(kitchen_id="k1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cycle(fake: FakeControlPlane, store: Store, clock: FakeClock) -> Iterator[SyncCycle]:
    with ControlPlaneClient(
        "http://cp", credential=fake.credential, transport=fake.transport()
    ) as client:
        yield SyncCycle(
            store=store,
            client=client,
            clock=clock,
            agent_id="agent-1",
            kitchen_id="k1",
            max_active_tasks=2,
            link_states=lambda: {"mqtt": "up"},
        )


def test_outbox_events_are_pushed_in_seq_order_and_forgotten_once_acked(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """Three events arrive as seq 1..3 and the acked outbox is empty afterwards."""
    for n in range(3):
        store.append_event(type="task.started", payload={"n": n}, occurred_at=1.0)
    outcome = cycle.run_once()
    assert outcome.acked == 3
    assert [e.seq for e in fake.requests[0].events] == [1, 2, 3]
    assert store.outbox_depth() == 0 and store.sequence() == (3, 3)
    assert fake.requests[0].heartbeat.links == {"mqtt": "up"}


def test_a_large_backlog_drains_in_batches_of_at_most_500(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """1,200 buffered events take three round trips, each in order, none over 500."""
    for _ in range(1200):
        store.append_event(type="x", payload={}, occurred_at=1.0)
    rounds = 0
    while store.outbox_depth():
        cycle.run_once()
        rounds += 1
    assert rounds == 3
    assert [len(r.events) for r in fake.requests] == [500, 500, 200]
    assert fake.acked_seq() == 1200


def test_a_new_lease_gets_its_deadline_from_the_request_send_time(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane, clock: FakeClock
) -> None:
    """start_deadline = monotonic time the request was sent + start_within_s."""
    fake.offer(lease(start_within_s=90.0))
    sent_at = clock.mono
    clock.step = 5.0  # time passes while the request travels
    assert cycle.run_once().new_leases == 1
    [task] = store.active_tasks()
    assert task.record.start_deadline == sent_at + 90.0


def test_want_leases_and_renewals_follow_the_held_leases(
    cycle: SyncCycle, fake: FakeControlPlane
) -> None:
    """With capacity 2 and one lease held, the next sync renews it and wants one more."""
    fake.offer(lease("t1"))
    cycle.run_once()
    cycle.run_once()
    first, second = fake.requests
    assert first.want_leases == 2 and first.renewals == []
    assert second.want_leases == 1
    assert [(r.task_id, r.fencing_token) for r in second.renewals] == [("t1", 3)]


def test_a_lease_delivered_twice_is_stored_once(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """Same task and fencing token again (a retried answer) creates no second task."""
    fake.offer(lease("t1"))
    fake.offer(lease("t1"))
    outcome = cycle.run_once()
    assert outcome.new_leases == 1
    assert len(store.active_tasks()) == 1


def test_a_cancellation_drops_a_never_started_task(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """The control plane withdraws an unstarted lease: the task leaves the executor."""
    fake.offer(lease("t1"))
    cycle.run_once()
    fake.cancel("t1", 3)
    assert cycle.run_once().dropped == 1
    assert store.active_tasks() == []
    assert store.run_counts() == {RunState.CANCELLED.value: 1}


def test_an_overloaded_control_plane_is_recorded_and_raised_as_retry_later(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """A 503 keeps the events buffered and records the error for `status`."""
    store.append_event(type="x", payload={}, occurred_at=1.0)
    fake.fail_status = 503
    with pytest.raises(RetryLater):
        cycle.run_once()
    assert store.outbox_depth() == 1
    assert "overloaded" in store.sync_state()["last_error"]


def test_a_lost_lease_drops_the_task_only_if_it_never_started(
    cycle: SyncCycle, store: Store, fake: FakeControlPlane
) -> None:
    """lost_leases: the unstarted task is dropped, the started one keeps running."""
    fake.offer(lease("t1"))
    fake.offer(lease("t2"))
    cycle.run_once()
    started = next(t.run for t in store.active_tasks() if t.run.task_id == "t2")
    store.apply_transition(
        run=replace(started, state=RunState.STARTED, started=True),
        events=[],
        occurred_at=1.0,
        expected_state=RunState.LEASED,
    )
    fake.lose("t1")
    fake.lose("t2")
    assert cycle.run_once().dropped == 1
    assert [t.run.task_id for t in store.active_tasks()] == ["t2"]


def test_no_new_leases_are_asked_for_while_work_cannot_start(
    cycle: SyncCycle, fake: FakeControlPlane
) -> None:
    """With the broker unreachable the agent renews what it holds but wants nothing new."""
    cycle.can_take_leases = lambda: False
    cycle.run_once()
    assert fake.requests[0].want_leases == 0


def test_an_ack_above_the_highest_seq_sent_is_clamped_and_counted(
    cycle: SyncCycle, store: Store, clock: FakeClock
) -> None:
    """Events appended after the request was built survive an ack that claims them."""
    for n in range(3):
        store.append_event(type="x", payload={"n": n}, occurred_at=1.0)
    request = cycle.build_request()
    for n in range(2):
        store.append_event(type="x", payload={"n": 3 + n}, occurred_at=1.0)
    response = SyncResponse(acked_seq=5, server_time=clock.wall())
    cycle.apply_response(response, sent_mono=clock.mono, sent_events=request.events)
    assert store.sequence() == (5, 3)
    assert [e.seq for e in store.pending_events(limit=10)] == [4, 5]
    assert store.counters().get("ack_above_sent") == 1


def test_a_resend_request_below_the_acked_seq_is_surfaced_as_stalled(
    cycle: SyncCycle, store: Store, clock: FakeClock
) -> None:
    """A control plane restored from backup asks for deleted events: counted and shown."""
    for n in range(3):
        store.append_event(type="x", payload={"n": n}, occurred_at=1.0)
    request = cycle.build_request()
    ok = SyncResponse(acked_seq=3, server_time=clock.wall())
    cycle.apply_response(ok, sent_mono=clock.mono, sent_events=request.events)
    restored = SyncResponse(acked_seq=1, resend_from=2, server_time=clock.wall())
    cycle.apply_response(restored, sent_mono=clock.mono, sent_events=[])
    assert cycle.stalled == "stalled: resend_from 2 below acked 3"
    assert store.counters().get("resend_below_acked") == 1
    assert cycle.build_request().heartbeat.links["control_plane"] == cycle.stalled
    cycle.apply_response(ok, sent_mono=clock.mono, sent_events=[])
    assert cycle.stalled is None


# -- the work doorbell's watch --------------------------------------------------------------------


#: In a script: hold the request for the wait asked, then answer the version held.
HOLD = "hold"


class ScriptedDoorbell:
    """A :class:`WorkDoorbellLink` answering from a script (an answer, an error or HOLD per
    call); past the script, each request is held until cancelled."""

    def __init__(self, *script: WorkResponse | Exception | str) -> None:
        self.script = list(script)
        #: (since, wait_s, monotonic time) of every request.
        self.calls: list[tuple[str | None, float, float]] = []
        self.cancelled = 0

    async def work(self, *, since: str | None, wait_s: float) -> WorkResponse:
        self.calls.append((since, wait_s, time.monotonic()))
        item = self.script.pop(0) if self.script else None
        if isinstance(item, Exception):
            raise item
        if isinstance(item, WorkResponse):
            return item
        try:
            await asyncio.sleep(wait_s if item == HOLD else 3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return answer(since or "e.0", changed=False)


def answer(version: str, *, changed: bool = True, lease_in_s: float | None = None) -> WorkResponse:
    now = time.time()
    return WorkResponse(
        version=version,
        changed=changed,
        server_time=now,
        next_lease_at=None if lease_in_s is None else now + lease_in_s,
    )


@dataclass
class Wakes:
    """What the watch asked of the sync loop: the monotonic time of each wake."""

    at: list[float] = field(default_factory=list)

    def __call__(self) -> None:
        self.at.append(time.monotonic())


def watch(link: ScriptedDoorbell, wakes: Wakes, **kwargs: Any) -> DoorbellWatch:
    settings: dict[str, Any] = {"interval_s": 0.1, "wait_s": 20.0, "backoff_cap_s": 0.5}
    return DoorbellWatch(link=link, clock=SystemClock(), wake_sync=wakes, **settings | kwargs)


def run_watch(doorbell_watch: DoorbellWatch, until: Callable[[], bool]) -> float:
    """Run the watch until ``until()`` holds (10 s at most), then stop it; returns how long
    the stop took."""

    async def main() -> float:
        stopped = asyncio.Event()
        running = asyncio.ensure_future(doorbell_watch.run(stopped))
        deadline = time.monotonic() + 10
        while not until() and not running.done():
            assert time.monotonic() < deadline, "the watch never got there"
            await asyncio.sleep(0.005)
        stopping = time.monotonic()
        stopped.set()
        await asyncio.wait_for(running, timeout=5)
        return time.monotonic() - stopping

    return asyncio.run(main())


def test_the_doorbell_wakes_the_sync_loop_when_the_version_changes() -> None:
    """The first answer and each new version wake the sync; the same version does not."""
    link = ScriptedDoorbell(answer("e.1"), answer("e.1", changed=False), answer("e.2"))
    wakes = Wakes()
    run_watch(watch(link, wakes), until=lambda: len(link.calls) == 4)
    assert [since for since, _, _ in link.calls] == [None, "e.1", "e.1", "e.2"]
    assert len(wakes.at) == 2


def test_the_doorbell_wakes_the_sync_loop_when_the_next_lease_is_due() -> None:
    """``next_lease_at`` 0.3 s ahead: the next request waits only until then, and the sync
    is woken once it is due, although the version did not change."""
    link = ScriptedDoorbell(answer("e.1", lease_in_s=0.3), HOLD)
    wakes = Wakes()
    run_watch(watch(link, wakes), until=lambda: len(link.calls) == 3)
    first_wake, due_wake = wakes.at
    assert link.calls[1][1] <= 0.4
    assert due_wake - first_wake >= 0.3


def test_a_control_plane_without_a_doorbell_turns_it_off_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """404: the watch ends by itself, off, having logged one line and woken nothing."""
    link = ScriptedDoorbell(ControlPlaneError("no route", status=404))
    wakes = Wakes()
    doorbell_watch = watch(link, wakes)
    with caplog.at_level(logging.INFO, logger="edge_agent.sync"):
        run_watch(doorbell_watch, until=lambda: not doorbell_watch.enabled)
    assert (len(link.calls), wakes.at, doorbell_watch.enabled) == (1, [], False)
    assert [r.message for r in caplog.records if "doorbell" in r.message] == [
        "the control plane has no work doorbell; syncing at the interval"
    ]


def test_doorbell_errors_back_off_no_faster_than_the_interval_and_wake_nothing() -> None:
    """Unreachable twice, then overloaded with Retry-After 0.3: each retry waits at least the
    interval (and the Retry-After); only the answer that finally comes wakes the sync."""
    link = ScriptedDoorbell(
        ControlPlaneUnreachable("refused"),
        ControlPlaneUnreachable("refused"),
        RetryLater("busy", status=503, delay_s=0.3),
        answer("e.1"),
    )
    wakes = Wakes()
    run_watch(watch(link, wakes), until=lambda: len(link.calls) == 5)
    times = [at for _, _, at in link.calls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[:4])]
    assert min(gaps) >= 0.1, gaps
    assert gaps[2] >= 0.3, gaps
    assert len(wakes.at) == 1 and wakes.at[0] >= times[3]


def test_after_a_crash_the_retries_are_spread_above_the_interval() -> None:
    """The server went away: retries wait the interval plus a jittered backoff, so a fleet
    cut off at the same instant does not come back in the same instant (gaps vary)."""
    down = [ControlPlaneUnreachable("refused") for _ in range(6)]
    link = ScriptedDoorbell(*down)
    run_watch(watch(link, Wakes(), rng=random.Random(3)), until=lambda: len(link.calls) == 7)
    times = [at for _, _, at in link.calls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.1, gaps
    assert sum(gap > 0.12 for gap in gaps) >= 4, gaps


def test_a_new_control_plane_epoch_spreads_its_sync_and_replicas_cannot_make_it_spin() -> None:
    """Answers alternating between two processes' epochs (replicas behind a balancer; a
    restart is one such change): the sync is woken within an interval of the first change,
    not on every answer, and never twice within an interval."""
    alternating = [answer(version) for version in ["b.0", "a.1"] * 5]
    link = ScriptedDoorbell(answer("a.1"), *alternating)
    wakes = Wakes()
    run_watch(watch(link, wakes, rng=random.Random(7)), until=lambda: len(link.calls) == 11)
    first, *spread = wakes.at
    assert first - link.calls[0][2] < 0.05  # the first answer is a change: at once
    assert spread and spread[0] - link.calls[1][2] <= 0.1 + 0.05
    gaps = [later - earlier for earlier, later in itertools.pairwise(spread)]
    assert all(gap >= 0.1 - 0.01 for gap in gaps), gaps
    assert len(spread) <= 1 + (link.calls[-1][2] - link.calls[1][2]) / 0.1


def test_early_answers_with_nothing_new_are_not_followed_faster_than_the_interval() -> None:
    """Something answering at once though nothing changed cannot make the agent spin: the
    next request waits out the interval."""
    unchanged = answer("e.1", changed=False)
    link = ScriptedDoorbell(answer("e.1"), unchanged, unchanged, unchanged)
    run_watch(watch(link, Wakes()), until=lambda: len(link.calls) == 5)
    times = [at for _, _, at in link.calls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[1:])]
    assert min(gaps) >= 0.1, gaps


def test_stopping_the_watch_cancels_a_held_request_at_once() -> None:
    """A request held by the server does not hold up the agent's stop."""
    link = ScriptedDoorbell(answer("e.1"))
    took = run_watch(watch(link, Wakes()), until=lambda: len(link.calls) == 2)
    assert took < 1.0
    assert link.cancelled == 1


def test_the_doorbell_is_not_held_while_no_lease_could_be_taken() -> None:
    """While the broker is down (no new work could start), no request is made."""
    asked: list[bool] = []

    def can_take_leases() -> bool:
        asked.append(False)
        return False

    link = ScriptedDoorbell()
    run_watch(
        watch(link, Wakes(), interval_s=0.02, can_take_leases=can_take_leases),
        until=lambda: len(asked) >= 3,
    )
    assert link.calls == []
