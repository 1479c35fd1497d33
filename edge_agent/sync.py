"""One sync round trip with the control plane: build the request from the store, apply the answer.

The request carries a heartbeat, up to 500 unacknowledged events from the first one in ``seq``
order (so a ``resend_from`` is always honoured by construction), renewals of every held lease,
and a request for new leases when the agent has capacity. The answer's leases get their
start-by deadline on the monotonic clock *from the moment the request was sent*, so neither
network latency nor a skewed wall clock can extend it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge_agent import __version__
from edge_agent.clock import Clock
from edge_agent.links.control_plane import ControlPlaneLink
from edge_agent.store import COUNTER_RESEND_BELOW_ACKED, Store
from protocol import EventEnvelope, Heartbeat, LeaseRenewal, SyncRequest, SyncResponse
from protocol.sync_api import MAX_SYNC_BATCH

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What one round trip did: events acked, leases accepted, tasks dropped, more to send."""

    acked: int
    new_leases: int
    dropped: int
    more_pending: bool


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

    def build_request(self) -> SyncRequest:
        if self.forward_routine:
            self.store.promote_routine(max_unacked=MAX_SYNC_BATCH)
        pending = self.store.pending_events(limit=MAX_SYNC_BATCH)
        held = self.store.held_leases()
        oldest = self.store.oldest_pending_at()
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
            for e in pending
        ]
        return SyncRequest(
            heartbeat=heartbeat,
            events=events,
            renewals=[LeaseRenewal(task_id=t, fencing_token=f) for t, f in held],
            want_leases=min(64, max(0, self.max_active_tasks - len(held)))
            if self.can_take_leases()
            else 0,
        )

    def _links(self) -> dict[str, str]:
        links = dict(self.link_states())
        if self.stalled is not None:
            links["control_plane"] = self.stalled
        return links

    def run_once(self) -> SyncOutcome:
        """Send one request and apply the answer; errors are :mod:`edge_agent.errors` ones."""
        request = self.build_request()
        sent_mono = self.clock.monotonic()
        try:
            response = self.client.sync(request)
        except Exception as exc:
            self.store.record_sync(at=self.clock.wall(), ok=False, error=str(exc)[:300])
            raise
        outcome = self.apply_response(response, sent_mono=sent_mono, sent_events=request.events)
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
        more = bool(sent_events) and len(sent_events or []) >= MAX_SYNC_BATCH and acked > 0
        return SyncOutcome(acked=acked, new_leases=new_leases, dropped=dropped, more_pending=more)
