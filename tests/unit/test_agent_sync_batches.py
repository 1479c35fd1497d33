"""Catch-up batches on the agent: the advertised limits, the next batch read while one is in
flight, and the advised sync interval; nothing is deleted before the control plane acks it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent.errors import ControlPlaneUnreachable
from edge_agent.executor import EventRecord
from edge_agent.store import Store
from edge_agent.sync import SyncCycle, SyncOutcome, batch_size
from protocol import SyncRequest, SyncResponse
from protocol.sync_api import MAX_NEXT_SYNC_S, MAX_SYNC_BATCH


@dataclass
class AdvertisingControlPlane:
    """A control plane that stores events by seq, acks the contiguous prefix (or, when told,
    less), and advertises batch limits and a sync interval."""

    max_events: int | None = 2000
    max_request_bytes: int | None = 1024 * 1024
    next_sync_s: float | None = None
    #: Acknowledge at most this many events of the next request (a partial ack), then reset.
    ack_only: int | None = None
    #: Raise on the next request instead of answering.
    fail_next: bool = False
    requests: list[SyncRequest] = field(default_factory=list)
    stored: dict[int, str] = field(default_factory=dict)

    def sync(self, request: SyncRequest) -> SyncResponse:
        self.requests.append(request)
        if self.fail_next:
            self.fail_next = False
            raise ControlPlaneUnreachable("blackholed")
        events = request.events if self.ack_only is None else request.events[: self.ack_only]
        self.ack_only = None
        for event in events:
            self.stored.setdefault(event.seq, event.event_id)
        acked = 0
        while acked + 1 in self.stored:
            acked += 1
        return SyncResponse(
            acked_seq=acked,
            server_time=1_767_225_600.0,
            max_events=self.max_events,
            max_request_bytes=self.max_request_bytes,
            next_sync_s=self.next_sync_s,
        )


class Clock:
    def monotonic(self) -> float:
        return 1000.0

    def wall(self) -> float:
        return 1_767_225_600.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="boot-1") as opened:
        yield opened


def cycle(store: Store, cp: AdvertisingControlPlane) -> SyncCycle:
    return SyncCycle(
        store=store, client=cp, clock=Clock(), agent_id="a1", kitchen_id="k1", max_active_tasks=0
    )


def backlog(store: Store, n: int, payload_text: str = "x") -> None:
    records = [EventRecord(type="device.status", payload={"note": payload_text})] * n
    store.append_events(events=records, occurred_at=1.0)


def drain(sync: SyncCycle, store: Store) -> int:
    rounds = 0
    while store.outbox_depth():
        sync.run_once()
        rounds += 1
    return rounds


def test_batches_grow_to_what_the_control_plane_advertises(store: Store) -> None:
    """The first batch is the protocol's 500; after the answer says 2,000, batches are 2,000."""
    cp = AdvertisingControlPlane(max_events=2000, max_request_bytes=8 * 1024 * 1024)
    backlog(store, 4500)
    assert drain(cycle(store, cp), store) == 3
    assert [len(r.events) for r in cp.requests] == [MAX_SYNC_BATCH, 2000, 2000]
    assert sorted(cp.stored) == list(range(1, 4501))


def test_a_control_plane_that_advertises_nothing_gets_at_most_500(store: Store) -> None:
    """An older control plane (no max_events) never receives more than MAX_SYNC_BATCH."""
    cp = AdvertisingControlPlane(max_events=None, max_request_bytes=None)
    backlog(store, 1200)
    drain(cycle(store, cp), store)
    assert max(len(r.events) for r in cp.requests) == MAX_SYNC_BATCH


def test_a_batch_stays_within_half_the_advertised_request_size(store: Store) -> None:
    """With 2 KiB payloads and a 64 KiB limit, once advertised, each request carries what
    fits in 32 KiB (the first one, before any answer, assumes the protocol's 1 MiB)."""
    cp = AdvertisingControlPlane(max_events=2000, max_request_bytes=64 * 1024)
    backlog(store, 1000, payload_text="y" * 2048)
    drain(cycle(store, cp), store)
    assert all(len(r.model_dump_json()) <= 64 * 1024 for r in cp.requests[1:])
    assert max(len(r.events) for r in cp.requests[1:]) == 14
    assert sorted(cp.stored) == list(range(1, 1001))


def test_one_event_larger_than_the_budget_still_goes_alone() -> None:
    """The first event always goes, so a large event cannot stall the outbox."""
    assert batch_size([60_000, 10], max_events=500, max_request_bytes=8192) == (1, True)


def test_the_next_batch_read_ahead_starts_right_after_the_acked_one(store: Store) -> None:
    """While a batch is in flight the next is read; every event arrives once, in seq order."""
    cp = AdvertisingControlPlane(max_events=700)
    backlog(store, 3000)
    drain(cycle(store, cp), store)
    seqs = [e.seq for r in cp.requests for e in r.events]
    assert seqs == list(range(1, 3001))


def test_a_partial_ack_drops_the_read_ahead_and_resends_from_the_first_unacked(
    store: Store,
) -> None:
    """The answer acks only 100 of 500: the next request starts at 101, not after 500."""
    cp = AdvertisingControlPlane(max_events=500, ack_only=100)
    backlog(store, 1200)
    sync = cycle(store, cp)
    sync.run_once()
    assert store.sequence() == (1200, 100)
    sync.run_once()
    assert cp.requests[1].events[0].seq == 101
    drain(sync, store)
    assert sorted(cp.stored) == list(range(1, 1201))


def test_a_failed_round_trip_deletes_nothing_and_the_batch_is_sent_again(store: Store) -> None:
    """Nothing read ahead is acked or deleted: after a failure the same batch goes again."""
    cp = AdvertisingControlPlane(max_events=500)
    backlog(store, 1200)
    sync = cycle(store, cp)
    sync.run_once()
    cp.fail_next = True
    with pytest.raises(ControlPlaneUnreachable):
        sync.run_once()
    assert store.sequence() == (1200, 500) and store.outbox_depth() == 700
    sync.run_once()
    assert cp.requests[2].events[0].seq == 501 == cp.requests[1].events[0].seq


def test_the_agent_waits_as_long_as_the_control_plane_advises(store: Store) -> None:
    """next_sync_s longer than the agent's interval is honoured; shorter is not."""
    cp = AdvertisingControlPlane(next_sync_s=7.5)
    backlog(store, 3)
    outcome = cycle(store, cp).run_once()
    assert outcome.next_sync_s == 7.5
    assert outcome.delay_s(2.0) == 7.5
    assert SyncOutcome(1, 0, 0, more_pending=False, next_sync_s=0.5).delay_s(2.0) == 2.0


def test_a_draining_backlog_is_not_slowed_by_the_advice() -> None:
    """While a batch was cut short, the next sync follows at once, whatever the advice."""
    assert SyncOutcome(500, 0, 0, more_pending=True, next_sync_s=30.0).delay_s(2.0) == 0.0


def test_the_advice_is_capped() -> None:
    """A control plane cannot park an agent for longer than MAX_NEXT_SYNC_S."""
    outcome = SyncOutcome(1, 0, 0, more_pending=False, next_sync_s=MAX_NEXT_SYNC_S * 10)
    assert outcome.delay_s(2.0) == MAX_NEXT_SYNC_S
