"""One sync round trip with the control plane: build the request from the store, apply the answer.

The request carries a heartbeat, a batch of unacknowledged events from the first one in ``seq``
order (so a ``resend_from`` is always honoured by construction), renewals of every held lease,
and a request for new leases when the agent has capacity. The answer's leases get their
start-by deadline on the monotonic clock *from the moment the request was sent*, so neither
network latency nor a skewed wall clock can extend it.

A batch holds at most :data:`~protocol.sync_api.MAX_SYNC_BATCH` events until the control plane
advertises more (``max_events``), and stays within a share of its request-size limit
(``max_request_bytes``), so an agent catching up after a partition needs few round trips and
never sends a body the control plane must refuse. A batch cut short by either limit is followed
at once; otherwise the next sync waits for the agent's interval or the control plane's
``next_sync_s``, whichever is longer, unless the work doorbell rings first
(:class:`DoorbellWatch`): then it syncs at once, since new work is waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.clock import Clock
from edge_agent.errors import ControlPlaneError, RetryLater
from edge_agent.links.control_plane import ControlPlaneLink, WorkDoorbellLink
from edge_agent.store import COUNTER_RESEND_BELOW_ACKED, Store
from protocol import EventEnvelope, Heartbeat, LeaseRenewal, SyncRequest, SyncResponse
from protocol.sync_api import MAX_NEXT_SYNC_S, MAX_SYNC_BATCH, MAX_SYNC_EVENTS

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes of one event envelope besides its payload (ids, type, times, JSON punctuation): a
#: generous bound, so a batch's size is never underestimated.
ENVELOPE_BYTES = 256
#: Request-size limit assumed until the control plane states its own: the default body limit
#: a control plane of this protocol ships with (1 MiB).
DEFAULT_REQUEST_BYTES = 1024 * 1024
#: Share of the control plane's request-size limit a batch of events may fill; the rest is for
#: the heartbeat, the renewals and any misestimate.
BATCH_BYTES_SHARE = 0.5


def batch_size(
    payload_bytes: list[int], *, max_events: int, max_request_bytes: int
) -> tuple[int, bool]:
    """How many of the pending events (their payload sizes, in seq order) fit in one request,
    and whether a limit cut the batch short. The first event always goes, however large (each
    is at most the protocol's 64 KiB), so a large event can never stall the outbox.

    >>> batch_size([100] * 10, max_events=4, max_request_bytes=1_000_000)
    (4, True)
    >>> batch_size([100] * 10, max_events=500, max_request_bytes=4096)
    (5, True)
    >>> batch_size([100] * 3, max_events=500, max_request_bytes=1_000_000)
    (3, False)
    """
    budget = int(max_request_bytes * BATCH_BYTES_SHARE)
    used = 0
    for count, size in enumerate(payload_bytes[:max_events]):
        used += size + ENVELOPE_BYTES
        if used > budget and count > 0:
            return count, True
    taken = min(len(payload_bytes), max_events)
    return taken, len(payload_bytes) > taken


@dataclass(frozen=True, slots=True)
class _Batch:
    """Events for one request, and whether a limit left more behind."""

    events: list[EventEnvelope]
    cut_short: bool
    #: The limits it was cut to (``max_events``, ``max_request_bytes``).
    limits: tuple[int, int]


class _Prefetch:
    """Reads the batch after ``after_seq`` in its own thread while a request is in flight;
    :meth:`join` waits for it (the sync loop always joins: no thread outlives a round trip).
    A failed read only means no prefetched batch: the next request reads it again."""

    def __init__(self, cycle: SyncCycle, *, after_seq: int) -> None:
        self.batch: _Batch | None = None
        self._cycle = cycle
        self._after_seq = after_seq
        self._thread = threading.Thread(target=self._read, name="brigade-sync-prefetch")

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _read(self) -> None:
        try:
            self.batch = self._cycle._read_batch(after_seq=self._after_seq)
        except Exception:
            log.warning("reading the next sync batch ahead failed", exc_info=True)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What one round trip did: events acked, leases accepted, tasks dropped, more to send, and
    the control plane's advice on when to sync next."""

    acked: int
    new_leases: int
    dropped: int
    more_pending: bool
    next_sync_s: float | None = None

    def delay_s(self, interval_s: float) -> float:
        """Seconds until the next sync: none while a backlog drains, else the agent's own
        interval or the control plane's advice, whichever is longer.

        >>> SyncOutcome(1, 0, 0, more_pending=False, next_sync_s=6.0).delay_s(2.0)
        6.0
        >>> SyncOutcome(500, 0, 0, more_pending=True, next_sync_s=6.0).delay_s(2.0)
        0.0
        """
        if self.more_pending:
            return 0.0
        return max(interval_s, min(self.next_sync_s or 0.0, MAX_NEXT_SYNC_S))


@dataclass
class SyncCycle:
    """Everything a sync round trip needs; :meth:`run_once` performs one."""

    store: Store
    client: ControlPlaneLink
    clock: Clock
    agent_id: str
    kitchen_id: str
    max_active_tasks: int
    link_states: Callable[[], Mapping[str, str]] = dict
    #: Whether new work could be started now (e.g. the broker is reachable); when not, the
    #: agent renews what it holds but asks for nothing new, so leases are not wasted.
    can_take_leases: Callable[[], bool] = lambda: True
    #: Number routine telemetry into the outbox when a batch has room (the routine lane; see
    #: :mod:`edge_agent.store`, "Two lanes, one seq").
    forward_routine: bool = False
    #: Set while the control plane asks for events the agent already deleted as acked (it was
    #: restored from a backup): shown as the control_plane link state.
    stalled: str | None = None
    #: Batch limits, as the control plane last advertised them (see the module docstring).
    max_events: int = MAX_SYNC_BATCH
    max_request_bytes: int = DEFAULT_REQUEST_BYTES
    #: Whether the last batch built was cut short by a limit (more events were waiting).
    _cut_short: bool = False
    #: The batch after the one in flight, read meanwhile (see :meth:`run_once`).
    _prefetched: _Batch | None = None

    def build_request(self) -> SyncRequest:
        if self.forward_routine:
            self.store.promote_routine(max_unacked=MAX_SYNC_BATCH)
        batch = self._take_prefetched() or self._read_batch(after_seq=0)
        self._cut_short = batch.cut_short
        held = self.store.held_leases()
        # The batch starts at the first unacknowledged event, so the oldest ones are in it; a
        # scan of the whole outbox for its minimum costs more than the rest of a catch-up sync.
        oldest = min((e.occurred_at for e in batch.events), default=None)
        wall = self.clock.wall()
        heartbeat = Heartbeat(
            agent_version=__version__,
            sent_at=wall,
            outbox_depth=self.store.outbox_depth(),
            oldest_event_age_s=max(0.0, wall - oldest) if oldest is not None else 0.0,
            active_tasks=len(held),
            links=self._links(),
            routine_backlog=self.store.routine_depth(),
            routine_dropped=self.store.counters().get("routine_dropped", 0),
            open_alerts=len(self.store.alerts(open_only=True)),
        )
        return SyncRequest(
            heartbeat=heartbeat,
            events=batch.events,
            renewals=[LeaseRenewal(task_id=t, fencing_token=f) for t, f in held],
            want_leases=min(64, max(0, self.max_active_tasks - len(held)))
            if self.can_take_leases()
            else 0,
        )

    def _read_batch(self, *, after_seq: int) -> _Batch:
        """The unacknowledged events after ``after_seq`` that fit in one request."""
        # One more than fits, to know whether the batch leaves events behind.
        waiting = self.store.pending_events(limit=self.max_events + 1, after_seq=after_seq)
        count, cut_short = batch_size(
            [e.payload_bytes for e in waiting],
            max_events=self.max_events,
            max_request_bytes=self.max_request_bytes,
        )
        events = [
            EventEnvelope(
                agent_id=self.agent_id,
                kitchen_id=self.kitchen_id,
                seq=e.seq,
                event_id=e.event_id,
                type=e.type,
                occurred_at=e.occurred_at,
                payload=e.payload,
            )
            for e in waiting[:count]
        ]
        return _Batch(events, cut_short, (self.max_events, self.max_request_bytes))

    def _take_prefetched(self) -> _Batch | None:
        """The batch read during the last round trip, if it is exactly what is to be sent now:
        it starts right after the acknowledged seq (no resend was asked, the whole batch was
        acked) and was cut to the limits the answer advertised."""
        batch, self._prefetched = self._prefetched, None
        if batch is None or not batch.events:
            return None
        _, acked_seq = self.store.sequence()
        if batch.events[0].seq != acked_seq + 1:
            return None
        if batch.limits != (self.max_events, self.max_request_bytes):
            return None
        return batch

    def _links(self) -> dict[str, str]:
        links = dict(self.link_states())
        if self.stalled is not None:
            links["control_plane"] = self.stalled
        return links

    def run_once(self) -> SyncOutcome:
        """Send one request and apply the answer; errors are :mod:`edge_agent.errors` ones.

        While a batch cut short by a limit is in flight (a backlog draining), the next one is
        read from the store in a helper thread, so the agent's reading and encoding overlaps
        the control plane's work. Nothing is acknowledged or deleted before the answer: the
        prefetched batch is only used if the answer acked everything sent, else dropped."""
        request = self.build_request()
        sent_mono = self.clock.monotonic()
        prefetch: _Prefetch | None = None
        if self._cut_short and request.events:
            prefetch = _Prefetch(self, after_seq=request.events[-1].seq)
            prefetch.start()
        try:
            response = self.client.sync(request)
        except Exception as exc:
            self.store.record_sync(at=self.clock.wall(), ok=False, error=str(exc)[:300])
            raise
        finally:
            if prefetch is not None:
                prefetch.join()
        outcome = self.apply_response(response, sent_mono=sent_mono, sent_events=request.events)
        if prefetch is not None and outcome.more_pending:
            self._prefetched = prefetch.batch
        self.store.record_sync(at=self.clock.wall(), ok=True)
        return outcome

    def apply_response(
        self,
        response: SyncResponse,
        *,
        sent_mono: float,
        sent_events: list[EventEnvelope] | None = None,
    ) -> SyncOutcome:
        sent_up_to = None if sent_events is None else max((e.seq for e in sent_events), default=0)
        if sent_up_to is not None and response.acked_seq > sent_up_to:
            log.error(
                "control plane acked events it was never sent; clamped",
                extra={"acked_seq": response.acked_seq, "sent_up_to": sent_up_to},
            )
        acked = self.store.ack_events(up_to_seq=response.acked_seq, sent_up_to=sent_up_to)
        _, own_acked = self.store.sequence()
        if response.resend_from is not None and response.resend_from <= own_acked:
            # Those events were acked before and are deleted: resending cannot help (the control
            # plane was restored from a backup). Say so loudly instead of looping in silence.
            self.stalled = f"stalled: resend_from {response.resend_from} below acked {own_acked}"
            self.store.count(COUNTER_RESEND_BELOW_ACKED)
            log.error(
                "control plane asked for events already acked and deleted",
                extra={"resend_from": response.resend_from, "acked_seq": own_acked},
            )
        else:
            self.stalled = None
            if response.resend_from is not None:
                # We always send from the first unacked event, so the next request resends.
                log.info(
                    "control plane asked for a resend", extra={"resend_from": response.resend_from}
                )
        now_mono = self.clock.monotonic()
        wall = self.clock.wall()
        new_leases = 0
        for lease in response.leases:
            if lease.kitchen_id != self.kitchen_id:
                log.error(
                    "ignoring a lease for another kitchen",
                    extra={"task_id": lease.task_id, "lease_kitchen": lease.kitchen_id},
                )
                continue
            wait_s = max(0.0, lease.start_after - response.server_time)
            if self.store.add_lease(
                lease=lease,
                received_at=wall,
                start_deadline_mono=sent_mono + lease.start_within_s,
                not_before_mono=now_mono + wait_s,
            ):
                new_leases += 1
                log.info(
                    "lease received",
                    extra={"task_id": lease.task_id, "fencing_token": lease.fencing_token},
                )
        dropped = 0
        for cancellation in response.cancellations:
            dropped += len(
                self.store.drop_unstarted(
                    task_id=cancellation.task_id,
                    fencing_token=cancellation.fencing_token,
                    reason=cancellation.reason,
                    at=wall,
                )
            )
        for task_id in response.lost_leases:
            dropped += len(self.store.drop_unstarted(task_id=task_id, reason="lease_lost", at=wall))
        self._learn_limits(response)
        more = bool(sent_events) and self._cut_short and acked > 0
        return SyncOutcome(
            acked=acked,
            new_leases=new_leases,
            dropped=dropped,
            more_pending=more,
            next_sync_s=response.next_sync_s,
        )

    def _learn_limits(self, response: SyncResponse) -> None:
        """Adopt the batch limits the control plane advertises (absent: the protocol's)."""
        self.max_events = min(response.max_events or MAX_SYNC_BATCH, MAX_SYNC_EVENTS)
        self.max_request_bytes = response.max_request_bytes or DEFAULT_REQUEST_BYTES


#: How long after ``next_lease_at`` (on the control plane's clock) the agent syncs, so the task
#: is inside the lease horizon when the sync arrives.
LEASE_DUE_MARGIN_S = 0.05


@dataclass
class DoorbellWatch:
    """Holds the control plane's work doorbell open while the agent could take leases, and
    calls ``wake_sync`` when the kitchen's work version changes (the first answer counts as a
    change) or when its next planned task enters the lease horizon (``next_lease_at``).

    Only a hint to sync sooner: leases still come with syncs alone, which go on at their
    interval whatever happens here. Errors back off with jitter and never retry sooner than
    the sync interval (``Retry-After`` honoured); they never wake the sync loop. A control
    plane without the doorbell (404) turns it off with one log line.

    Runs on an event loop (:meth:`run`), so a stop cancels a held request at once.
    """

    link: WorkDoorbellLink
    clock: Clock
    wake_sync: Callable[[], None]
    interval_s: float
    wait_s: float = 20.0
    backoff_cap_s: float = 300.0
    #: Whether new work could be started now; while not, the doorbell is not held.
    can_take_leases: Callable[[], bool] = lambda: True
    rng: random.Random | None = None
    #: The work version last heard (None before the first answer).
    version: str | None = None
    #: False once the control plane said it has no doorbell.
    enabled: bool = True
    #: When (monotonic) a new control-plane epoch last had a sync scheduled (:meth:`_heard`).
    epoch_wake_at: float | None = None

    async def run(self, stopped: asyncio.Event) -> None:
        """Watch until ``stopped`` is set (or the doorbell turns out not to exist)."""
        backoff = Backoff(
            base_s=self.interval_s,
            cap_s=max(self.interval_s, self.backoff_cap_s),
            rng=self.rng,
        )
        lease_due: float | None = None  # monotonic
        failing = False
        while self.enabled and not stopped.is_set():
            if not self.can_take_leases():
                await _pause(stopped, self.interval_s)
                continue
            now = self.clock.monotonic()
            if lease_due is not None and now >= lease_due:
                lease_due = None
                self.wake_sync()
            wait_s = self.wait_s if lease_due is None else min(self.wait_s, lease_due - now)
            asked = now
            try:
                answer = await _unless_stopped(
                    stopped, self.link.work(since=self.version, wait_s=wait_s)
                )
                if answer is None:
                    return
            except RetryLater as exc:
                delay = max(self.interval_s, backoff.next_delay(floor_s=exc.delay_s))
                error = str(exc)
            except ControlPlaneError as exc:
                if exc.status == 404:
                    log.info("the control plane has no work doorbell; syncing at the interval")
                    self.enabled = False
                    return
                # Jitter above the interval, not under it (a max() would round most draws up
                # to exactly the interval): a fleet cut off by one server crash comes back
                # spread over an interval, not all in the same instant.
                delay = self.interval_s + backoff.next_delay()
                error = str(exc)
            except Exception as exc:
                # A bug must not end the watch, nor make it spin.
                log.exception("unexpected work doorbell error")
                delay = self.interval_s + backoff.next_delay()
                error = repr(exc)
            else:
                if failing:
                    log.info("work doorbell answering again")
                failing = False
                backoff.reset()
                heard = self.clock.monotonic()
                due = lease_due is not None and heard >= lease_due
                lease_due = (
                    None
                    if answer.next_lease_at is None
                    else heard
                    + max(0.0, answer.next_lease_at - answer.server_time)
                    + LEASE_DUE_MARGIN_S
                )
                if answer.version != self.version:
                    spread_due = self._heard(answer.version, heard)
                    if spread_due is None:
                        due = True
                    else:
                        lease_due = spread_due if lease_due is None else min(lease_due, spread_due)
                if due:
                    self.wake_sync()
                if not due and heard - asked < wait_s / 2:
                    # Nothing new, yet answered long before the wait asked (the request was
                    # replaced, or something on the way answers early): no faster than the
                    # interval, or a misbehaving path would have the agent polling in a loop.
                    pause_s = self.interval_s - (heard - asked)
                    if lease_due is not None:
                        pause_s = min(pause_s, lease_due - heard)
                    await _pause(stopped, pause_s)
                continue
            # Once per outage at warning level: the sync loop reports the control plane's state.
            log.log(
                logging.DEBUG if failing else logging.WARNING,
                "work doorbell failed",
                extra={"error": error[:300], "retry_in_s": round(delay, 2)},
            )
            failing = True
            await _pause(stopped, delay)

    def _heard(self, version: str, heard: float) -> float | None:
        """Take a new work version; returns when to sync for it: None for at once (the
        kitchen's work changed), or a time (monotonic) when it came from another epoch.

        A new epoch is a restarted control plane (or another replica behind a balancer): the
        whole fleet hears it at the same moment and for most agents nothing changed, so the
        sync it calls for is spread over one interval, and such syncs are at least an interval
        apart (replicas answering in turn would otherwise have the agent syncing in a loop).
        """
        previous, self.version = self.version, version
        if previous is None or _epoch(previous) == _epoch(version):
            return None
        scheduled = self.epoch_wake_at
        if scheduled is not None and heard < scheduled:
            return scheduled  # one is coming already
        at = heard + (self.rng or random).uniform(0.0, self.interval_s)
        if scheduled is not None:
            at = max(at, scheduled + self.interval_s)
        self.epoch_wake_at = at
        return at


def _epoch(version: str) -> str:
    """The control-plane process a work version comes from (``"3f9a1c2e.17"`` -> ``3f9a1c2e``)."""
    return version.rpartition(".")[0]


async def _unless_stopped(stopped: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None (``work`` cancelled, a held request closed) once ``stopped``
    is set first."""
    task = asyncio.ensure_future(work)
    halt = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({task, halt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, halt):
            pending.cancel()
        await asyncio.gather(task, halt, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def _pause(stopped: asyncio.Event, delay_s: float) -> None:
    """Sleep ``delay_s`` unless ``stopped`` is set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), timeout=max(delay_s, 0.0))
