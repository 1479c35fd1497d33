"""Agent sync: apply a batch of outbox events, renew and grant leases, in one transaction.

The agent is authoritative on what happened in the kitchen, the control plane on plans and
leases (SPEC guarantee 4). Events are deduplicated by ``(agent_id, seq)``; only the contiguous
prefix after the last acknowledged ``seq`` is applied, a gap answers ``resend_from``. A report
carrying a fencing token that is not the task's current one is recorded as a conflict in the
audit trail and never applied.

The pure parts, :func:`plan_batch`, :func:`track_reconnect` and the clock estimator of
:mod:`control_plane.clock`, decide; :func:`sync` applies their decisions to the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from control_plane import audit, leases, stock
from control_plane.auth import AgentIdentity
from control_plane.clock import ClockEstimate, server_time_of, update_clock_estimate
from control_plane.config import Settings
from control_plane.errors import Forbidden, SeqReused
from control_plane.store import Store, Writer
from protocol.errors import MessageError
from protocol.events import (
    AlertRaised,
    AlertResolved,
    DeviceStatus,
    EventEnvelope,
    EventType,
    HaccpEvidence,
    StepDone,
    StepStarted,
    TaskDone,
    TaskFailed,
    TaskReleased,
    TaskStarted,
    parse_event_payload,
)
from protocol.sync_api import (
    MAX_SYNC_EVENTS,
    Cancellation,
    Lease,
    SyncRequest,
    SyncResponse,
)

#: ``json.dumps(..., separators=(",", ":"))`` built once (it builds an encoder per call).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class BatchPlan:
    """Which seqs of a batch to apply, how many were duplicates, and where a gap starts."""

    apply: tuple[int, ...]
    duplicates: int
    resend_from: int | None
    acked_seq: int


def plan_batch(last_acked_seq: int, seqs: Iterable[int]) -> BatchPlan:
    """Decide what to do with a batch given the highest contiguous seq already stored.

    >>> plan_batch(3, [2, 3, 4, 5, 7, 8])
    BatchPlan(apply=(4, 5), duplicates=2, resend_from=6, acked_seq=5)
    """
    expected, apply, duplicates, resend_from = last_acked_seq + 1, [], 0, None
    for seq in sorted(seqs):
        if seq < expected:
            duplicates += 1
        elif seq == expected:
            apply.append(seq)
            expected += 1
        else:
            resend_from = expected
            break
    return BatchPlan(tuple(apply), duplicates, resend_from, expected - 1)


#: Syncs in a row that begin behind the same gap before its events count as unrecoverable.
STALLED_SYNCS_UNRECOVERABLE = 3


def track_stall(
    previous_first_seq: int | None,
    previous_syncs: int,
    *,
    last_acked_seq: int,
    first_seq: int | None,
) -> tuple[int | None, int]:
    """Count the syncs in a row whose batch begins with ``first_seq`` behind a gap.

    An agent that answers ``resend_from`` with the same first seq again and again no longer has
    the missing events (e.g. the control plane was restored from an older backup). A batch
    without events leaves the count as it was; one without a leading gap resets it.

    >>> track_stall(None, 0, last_acked_seq=4, first_seq=9)
    (9, 1)
    >>> track_stall(9, 2, last_acked_seq=4, first_seq=9)
    (9, 3)
    >>> track_stall(9, 3, last_acked_seq=4, first_seq=5)
    (None, 0)
    """
    if first_seq is None:
        return previous_first_seq, previous_syncs
    if first_seq <= last_acked_seq + 1:
        return None, 0
    if first_seq == previous_first_seq:
        return first_seq, previous_syncs + 1
    return first_seq, 1


@dataclass(frozen=True)
class Reconnect:
    """What one reconnect after a partition took: from the first sync after an absence until
    the agent's outbox was drained."""

    started_at: float
    offline_s: float
    finished_at: float | None
    syncs: int
    events_applied: int
    duplicates_ignored: int
    conflicts: int
    resend_requests: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Reconnect | None:
        return None if not text else cls(**json.loads(text))


def track_reconnect(
    previous: Reconnect | None,
    *,
    last_seen_at: float | None,
    now: float,
    unreachable_after_s: float,
    applied: int,
    duplicates: int,
    conflicts: int,
    gap: bool,
    caught_up: bool,
) -> tuple[Reconnect | None, bool]:
    """Fold one sync into the current reconnect; returns it and whether it finished now.

    A reconnect starts with the first sync after more than ``unreachable_after_s`` of silence
    and finishes with the first sync that leaves nothing behind (``caught_up``).

    >>> r, done = track_reconnect(None, last_seen_at=0.0, now=600.0, unreachable_after_s=120,
    ...                           applied=500, duplicates=3, conflicts=0, gap=True,
    ...                           caught_up=False)
    >>> (r.offline_s, r.events_applied, r.resend_requests, done)
    (600.0, 500, 1, False)
    """
    counts = {
        "events_applied": applied,
        "duplicates_ignored": duplicates,
        "conflicts": conflicts,
        "resend_requests": int(gap),
    }
    if previous is not None and previous.finished_at is None:
        current = Reconnect(
            started_at=previous.started_at,
            offline_s=previous.offline_s,
            finished_at=None,
            syncs=previous.syncs + 1,
            **{key: getattr(previous, key) + value for key, value in counts.items()},
        )
    elif last_seen_at is not None and now - last_seen_at > unreachable_after_s:
        current = Reconnect(
            started_at=now, offline_s=now - last_seen_at, finished_at=None, syncs=1, **counts
        )
    else:
        return previous, False
    if caught_up:
        return replace(current, finished_at=now), True
    return current, False


@dataclass
class SyncStats:
    """What one sync did, for metrics."""

    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    gap: bool = False
    conflicts: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    wasted_tasks: int = 0
    leases_granted: int = 0
    leases_lost: int = 0
    cancellations: int = 0
    reconnect: Reconnect | None = None  # set when a reconnect finished with this sync


def sync(
    store: Store,
    agent: AgentIdentity,
    request: SyncRequest,
    *,
    now: float,
    settings: Settings,
    next_sync_s: float | None = None,
) -> tuple[SyncResponse, SyncStats]:
    """Apply one sync round trip and build the answer; ``next_sync_s`` is the pacing advice
    passed on to the agent (:class:`control_plane.fleet.SyncPacer`)."""
    for event in request.events:
        if event.agent_id != agent.agent_id or event.kitchen_id != agent.kitchen_id:
            raise Forbidden(
                f"event seq {event.seq} is for agent {event.agent_id}/kitchen {event.kitchen_id};"
                f" this credential is agent {agent.agent_id} of kitchen {agent.kitchen_id}"
            )
    stats = SyncStats()

    def apply(tx: Writer) -> tuple[BatchPlan, list[Lease], list[str], list[Cancellation]] | None:
        row = tx.agent(agent.agent_id)
        assert row is not None
        last_acked_seq = int(row["last_acked_seq"])
        if _record_reused_seqs(tx, agent, last_acked_seq, request.events, now=now):
            return None
        previous_clock = (
            None
            if row["clock_offset_measured_at"] is None
            else ClockEstimate(
                float(row["clock_offset_s"]),
                float(row["clock_offset_measured_at"]),
                int(row["clock_samples"]),
            )
        )
        clock = update_clock_estimate(
            previous_clock,
            sent_at=request.heartbeat.sent_at,
            received_at=now,
            drift_ppm=settings.clock_drift_ppm,
            step_s=settings.clock_step_s,
        )
        # When the agent built this request, on our timeline; of two estimates the earlier,
        # so a delayed request is never taken for a newer one.
        sent_at = request.heartbeat.sent_at
        offset_s = clock.offset_s if previous_clock is None else previous_clock.offset_s
        built_at = server_time_of(sent_at, offset_s=min(offset_s, clock.offset_s), received_at=now)
        # Built before a request we already answered (reordered by a queue or a proxy): the
        # agent may hold, and have started, leases this one cannot know of.
        newest_sent_at = row["last_heartbeat_sent_at"]
        stale = newest_sent_at is not None and sent_at < float(newest_sent_at)
        batch = plan_batch(last_acked_seq, (e.seq for e in request.events))
        stalled = _track_unrecoverable(tx, agent, row, request.events, now=now, stats=stats)
        stats.duplicates, stats.gap = batch.duplicates, batch.resend_from is not None
        by_seq: dict[int, EventEnvelope] = {}
        for event in request.events:
            by_seq.setdefault(event.seq, event)
        writes = _BatchWrites(tx, now)
        for seq in batch.apply:
            _apply(writes, agent, by_seq[seq], offset=clock.offset_s, now=now, stats=stats)
        writes.flush()
        # Nothing of the agent's outbox is left behind this batch: what it did not report,
        # it did not do.
        caught_up = not stats.gap and request.heartbeat.outbox_depth <= len(request.events)
        lost, cancellations = leases.renew(tx, agent, list(request.renewals))
        renewed = {r.task_id for r in request.renewals}
        granted = leases.redeliver_or_reclaim(
            tx,
            agent,
            renewed=renewed,
            want=request.want_leases,
            now=now,
            built_at=built_at,
            caught_up=caught_up and not stale,
        )
        leases.release_cancelled_unstarted(
            tx, agent, now=now, built_at=built_at, caught_up=caught_up and not stale
        )
        granted += leases.grant(
            tx, agent, want=request.want_leases - len(granted), now=now, settings=settings
        )
        reconnect, finished = track_reconnect(
            Reconnect.from_json(row["reconnect_json"]),
            last_seen_at=row["last_seen_at"],
            now=now,
            unreachable_after_s=settings.agent_unreachable_after_s,
            applied=len(batch.apply),
            duplicates=batch.duplicates,
            conflicts=sum(stats.conflicts.values()),
            gap=stats.gap,
            caught_up=caught_up,
        )
        if finished:
            assert reconnect is not None
            stats.reconnect = reconnect
            audit.append(
                tx,
                at=now,
                actor_type="system",
                actor_id="reconcile",
                action="agent.reconnected",
                subject_type="agent",
                subject_id=agent.agent_id,
                kitchen_id=agent.kitchen_id,
                details=asdict(reconnect) | {"clock_offset_s": clock.offset_s},
            )
        # The agent's row is written once per sync, with everything the sync learned.
        tx.record_sync(
            agent_id=agent.agent_id,
            last_acked_seq=batch.acked_seq,
            heartbeat_sent_at=sent_at,
            stalled_first_seq=stalled[0],
            stalled_syncs=stalled[1],
            last_seen_at=now,
            clock_offset_s=clock.offset_s,
            clock_offset_measured_at=clock.measured_at,
            clock_samples=clock.samples,
            agent_version=request.heartbeat.agent_version,
            outbox_depth=request.heartbeat.outbox_depth,
            reconnect_json=None if reconnect is None else reconnect.to_json(),
        )
        return batch, granted, lost, cancellations

    # Group-committed with concurrent syncs and orders: answered only once on disk.
    applied = store.submit(apply)
    if applied is None:
        raise SeqReused(
            f"agent {agent.agent_id} sent seqs it already had acknowledged with other event ids"
            " (was its store restored?); nothing of the batch was applied",
            reason="seq_reused",
        )
    batch, granted, lost, cancellations = applied
    stats.leases_granted, stats.leases_lost = len(granted), len(lost)
    stats.cancellations = len(cancellations)
    response = SyncResponse(
        acked_seq=batch.acked_seq,
        resend_from=batch.resend_from,
        server_time=now,
        leases=granted,
        cancellations=cancellations,
        lost_leases=lost,
        config={
            "lease_horizon_s": settings.lease_horizon_s,
            "start_by_grace_s": settings.start_by_grace_s,
        },
        max_events=MAX_SYNC_EVENTS,
        max_request_bytes=settings.max_body_bytes,
        next_sync_s=next_sync_s,
    )
    return response, stats


def _record_reused_seqs(
    tx: Writer,
    agent: AgentIdentity,
    last_acked_seq: int,
    events: Iterable[EventEnvelope],
    *,
    now: float,
) -> bool:
    """Whether the batch re-uses acknowledged seqs for other events (the agent's seq restarted,
    e.g. a restored ``agent.db``); if so the conflict is audited, and nothing else is done.

    Taking them for duplicates would drop the new events here while the agent deletes them."""
    sent = {e.seq: e.event_id for e in events if e.seq <= last_acked_seq}
    stored = tx.event_ids(agent.agent_id, sorted(sent)) if sent else {}
    reused = [seq for seq in sorted(stored) if stored[seq] != sent[seq]]
    if not reused:
        return False
    audit.append(
        tx,
        at=now,
        actor_type="agent",
        actor_id=agent.agent_id,
        action="conflict.seq_reused",
        subject_type="agent",
        subject_id=agent.agent_id,
        kitchen_id=agent.kitchen_id,
        reason="seq_reused",
        details={
            "last_acked_seq": last_acked_seq,
            "reused_seqs": len(reused),
            "first_seq": reused[0],
            "stored_event_id": stored[reused[0]],
            "event_id": sent[reused[0]],
        },
    )
    return True


def _track_unrecoverable(
    tx: Writer,
    agent: AgentIdentity,
    row: sqlite3.Row,
    events: Iterable[EventEnvelope],
    *,
    now: float,
    stats: SyncStats,
) -> tuple[int | None, int]:
    """Record, once, a gap the agent keeps failing to fill: ``events_unrecoverable``. The
    server never skips it by itself; an operator accepts it (:func:`fleet.accept_gap`).
    Returns the stall count to store (:func:`track_stall`), written with the agent's row."""
    last_acked_seq = int(row["last_acked_seq"])
    first_seq = min((e.seq for e in events), default=None)
    stalled_first_seq, stalled_syncs = track_stall(
        row["stalled_first_seq"],
        int(row["stalled_syncs"]),
        last_acked_seq=last_acked_seq,
        first_seq=first_seq,
    )
    stalled = (stalled_first_seq, stalled_syncs)
    if stalled_first_seq is None or stalled_syncs != STALLED_SYNCS_UNRECOVERABLE:
        return stalled
    from_seq, to_seq = last_acked_seq + 1, stalled_first_seq - 1
    tx.set_agent_unrecoverable(agent_id=agent.agent_id, from_seq=from_seq, to_seq=to_seq, at=now)
    stats.conflicts["events_unrecoverable"] += 1
    audit.append(
        tx,
        at=now,
        actor_type="system",
        actor_id="reconcile",
        action="conflict.events_unrecoverable",
        subject_type="agent",
        subject_id=agent.agent_id,
        kitchen_id=agent.kitchen_id,
        reason="events_unrecoverable",
        details={"from_seq": from_seq, "to_seq": to_seq, "syncs": stalled_syncs},
    )
    return stalled


class _BatchWrites:
    """The writes of a batch's events that need not happen one by one: the event log rows and
    the audit records are inserted together, and an equipment item's status, which later
    events of the batch overwrite, is written once with its last value (the audit keeps every
    change). Flushed before anything else in the sync's transaction reads or appends them."""

    def __init__(self, tx: Writer, now: float = 0.0) -> None:
        self.tx = tx
        self._now = now
        self.audit = audit.Batch(tx)
        self._events: list[tuple[object, ...]] = []
        self._equipment: dict[tuple[str, str], dict[str, Any]] = {}
        #: Tasks known never to have started whose stock goes back, with why (after the
        #: batch's audit records: giving stock back appends its own).
        self._unstarted: dict[str, str] = {}

    def release_stock(self, task_id: str, reason: str) -> None:
        self._unstarted.setdefault(task_id, reason)

    def event(self, row: tuple[object, ...]) -> None:
        self._events.append(row)

    def equipment(
        self, *, kitchen_id: str, equipment_id: str, kind: str | None, health: str, at: float
    ) -> None:
        key = (kitchen_id, equipment_id)
        previous = self._equipment.get(key)
        # As consecutive upserts would leave it: the last known kind, the last health.
        if kind is None and previous is not None:
            kind = previous["kind"]
        self._equipment[key] = {"kind": kind, "health": health, "updated_at": at}

    def flush(self) -> None:
        self.audit.flush()
        if self._events:
            self.tx.insert_event_rows(rows=self._events)
        for (kitchen_id, equipment_id), status in self._equipment.items():
            self.tx.upsert_equipment(
                kitchen_id=kitchen_id,
                equipment_id=equipment_id,
                kind=status["kind"],
                station_id=None,
                health=status["health"],
                updated_at=status["updated_at"],
            )
        for task_id, reason in sorted(self._unstarted.items()):
            stock.release(
                self.tx,
                task_ids=[task_id],
                now=self._now,
                actor="reconcile",
                actor_type="system",
                reason=reason,
            )
        self._events, self._equipment, self._unstarted = [], {}, {}


@dataclass(frozen=True)
class _Context:
    writes: _BatchWrites
    tx: Writer
    agent: AgentIdentity
    event: EventEnvelope
    at: float  # occurred_at on the server's timeline
    now: float
    stats: SyncStats
    offset_s: float = 0.0  # the agent's clock offset (agent time + offset = server time)

    def record(
        self,
        action: str,
        *,
        task: sqlite3.Row | None = None,
        subject: tuple[str, str] | None = None,
        device_id: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Audit one fact, once per order the task serves (or once with no order)."""
        base = {"event_seq": self.event.seq, "event_id": self.event.event_id}
        if subject is None:
            assert task is not None, "a record without a task names its subject"
            subject = ("task", str(task["id"]))
        subject_type, subject_id = subject
        order_ids: list[str | None] = [None]
        if task is not None:
            order_ids = [*self.tx.order_ids_of_task(str(task["id"]))] or [None]
        for order_id in order_ids:
            self.writes.audit.append(
                at=self.at,
                actor_type="agent",
                actor_id=self.agent.agent_id,
                action=action,
                subject_type=subject_type,
                subject_id=subject_id,
                order_id=order_id,
                kitchen_id=self.agent.kitchen_id,
                station_id=task["station_id"] if task is not None else None,
                device_id=device_id,
                reason=reason,
                details=base | {k: v for k, v in (details or {}).items() if v is not None},
            )


def _apply(
    writes: _BatchWrites,
    agent: AgentIdentity,
    event: EventEnvelope,
    *,
    offset: float,
    now: float,
    stats: SyncStats,
) -> None:
    at = server_time_of(event.occurred_at, offset_s=offset, received_at=now)
    ctx = _Context(writes, writes.tx, agent, event, at=at, now=now, stats=stats, offset_s=offset)
    try:
        payload = parse_event_payload(event)
    except MessageError as exc:
        outcome = "unknown_type" if exc.reason == "unknown_event_type" else "invalid"
        stats.invalid += 1
        ctx.record(
            "event.rejected",
            subject=("event", f"{agent.agent_id}:{event.seq}"),
            reason=exc.reason,
            details={"type": event.type, "error": str(exc)},
        )
    else:
        applier = _APPLIERS.get(event.type, _stored_only)
        outcome = applier(ctx, payload)
        if outcome == "applied":
            stats.applied[event.type] += 1
    writes.event(
        (
            agent.agent_id,
            event.seq,
            event.event_id,
            event.type,
            event.occurred_at,
            ctx.at,
            now,
            _COMPACT_JSON.encode(event.payload),
            outcome,
        )
    )


def _fenced_task(ctx: _Context, task_id: str, fencing_token: int) -> sqlite3.Row | None:
    """The task if the report's lease is current; otherwise record a conflict, return None."""
    task = ctx.tx.task(task_id)
    if task is None:
        reason = "task_unknown"
    elif task["lease_agent_id"] != ctx.agent.agent_id or task["fencing_token"] != fencing_token:
        # After an operator moved the task, a report under the old lease is a second batch.
        moved = task["reassigned_at"] is not None and fencing_token < task["fencing_token"]
        reason = "duplicate_after_reassignment" if moved else "stale_fencing_token"
    else:
        return task
    ctx.stats.conflicts[reason] += 1
    ctx.record(
        f"conflict.{reason}",
        task=task,
        subject=("task", task_id),
        reason=reason,
        details={
            "event_type": ctx.event.type,
            "fencing_token": fencing_token,
            "current_fencing_token": task["fencing_token"] if task is not None else None,
            "lease_agent_id": task["lease_agent_id"] if task is not None else None,
        },
    )
    return None


def _state_conflict(ctx: _Context, task: sqlite3.Row, reason: str) -> str:
    ctx.stats.conflicts[reason] += 1
    ctx.record(
        f"conflict.{reason}",
        task=task,
        reason=reason,
        details={"event_type": ctx.event.type, "state": task["state"]},
    )
    return "conflict"


def _task_started(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, TaskStarted)
    task = _fenced_task(ctx, payload.task_id, payload.fencing_token)
    if task is None:
        return "conflict"
    if task["state"] == "cancelled":
        # The kitchen started it before it heard of the cancellation: a fact, and a conflict.
        ctx.tx.set_task_started_at(task_id=task["id"], started_at=ctx.at, at=ctx.now)
        return _state_conflict(ctx, task, "started_after_cancel")
    if task["state"] != "leased":
        return (
            "ignored"
            if task["state"] in ("started", "done")
            else _state_conflict(ctx, task, "task_not_startable")
        )
    ctx.tx.set_task_started(task_id=task["id"], started_at=ctx.at, at=ctx.now)
    for order_id in ctx.tx.order_ids_of_task(task["id"]):
        order = ctx.tx.order(order_id)
        if order is not None and order["status"] in ("accepted", "planned"):
            ctx.tx.set_order_status(order_id=order_id, status="in_prep", at=ctx.at)
    ctx.record(
        "task.started",
        task=task,
        details={"staff_badge": payload.staff_badge, "fencing_token": payload.fencing_token},
    )
    return "applied"


def _step(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, StepStarted | StepDone)
    task = _fenced_task(ctx, payload.task_id, payload.fencing_token)
    if task is None:
        return "conflict"
    details: dict[str, Any] = {"step": payload.step, "command_id": payload.command_id}
    if isinstance(payload, StepDone):
        details |= {
            "core_temp_c": payload.core_temp_c,
            "staff_badge": payload.staff_badge,
            "delay_reason": payload.delay_reason,
        }
    ctx.record(ctx.event.type, task=task, device_id=payload.device_id, details=details)
    return "applied"


def _task_done(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, TaskDone)
    task = _fenced_task(ctx, payload.task_id, payload.fencing_token)
    if task is None:
        return "conflict"
    if task["state"] == "cancelled":
        return _wasted(ctx, task, payload.quantity)
    if task["state"] not in ("leased", "started"):
        return (
            "ignored" if task["state"] == "done" else _state_conflict(ctx, task, "task_not_running")
        )
    ctx.tx.set_task_finished(
        task_id=task["id"], state="done", finished_at=ctx.at, failure_reason=None, at=ctx.now
    )
    ctx.record("task.done", task=task, details={"quantity": payload.quantity})
    for order_id in ctx.tx.order_ids_of_task(task["id"]):
        states = {t["state"] for t in ctx.tx.tasks_of_order(order_id)}
        if states == {"done"}:
            ctx.tx.set_order_status(order_id=order_id, status="ready", at=ctx.at)
            ctx.writes.audit.append(
                at=ctx.at,
                actor_type="system",
                actor_id="reconcile",
                action="order.ready",
                subject_type="order",
                subject_id=order_id,
                order_id=order_id,
                kitchen_id=ctx.agent.kitchen_id,
            )
    return "applied"


def _wasted(ctx: _Context, task: sqlite3.Row, quantity: int) -> str:
    """A cancelled task the kitchen cooked anyway (it was offline, or had started)."""
    if task["wasted_quantity"] is not None:
        return "ignored"
    ctx.tx.set_task_wasted(task_id=task["id"], quantity=quantity, finished_at=ctx.at, at=ctx.now)
    ctx.stats.wasted_tasks += 1
    ctx.record(
        "task.wasted",
        task=task,
        reason=str(task["cancel_reason"] or "cancelled"),
        details={"quantity": quantity, "sku_id": task["sku_id"]},
    )
    return "wasted"


def _task_failed(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, TaskFailed)
    task = _fenced_task(ctx, payload.task_id, payload.fencing_token)
    if task is None:
        return "conflict"
    unstarted = not payload.started and task["started_at"] is None
    if task["state"] == "cancelled":
        ctx.record("task.failed", task=task, reason=payload.reason, details={"cancelled": True})
        if unstarted:
            ctx.writes.release_stock(str(task["id"]), stock.CANCELLED_UNSTARTED)
        return "applied"
    if task["state"] not in ("leased", "started"):
        return (
            "ignored"
            if task["state"] == "failed"
            else _state_conflict(ctx, task, "task_not_running")
        )
    ctx.tx.set_task_finished(
        task_id=task["id"],
        state="failed",
        finished_at=ctx.at,
        failure_reason=payload.reason,
        at=ctx.now,
    )
    for order_id in ctx.tx.order_ids_of_task(task["id"]):
        ctx.tx.set_order_status(
            order_id=order_id, status="failed", at=ctx.at, reason=payload.reason
        )
    ctx.record(
        "task.failed", task=task, reason=payload.reason, details={"started": payload.started}
    )
    if unstarted:
        # Nothing was cooked: what it reserved goes back to the kitchen's stock.
        ctx.writes.release_stock(str(task["id"]), stock.FAILED_UNSTARTED)
    return "applied"


def _task_released(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, TaskReleased)
    task = _fenced_task(ctx, payload.task_id, payload.fencing_token)
    if task is None:
        return "conflict"
    if task["state"] == "cancelled" and task["started_at"] is None:
        # Cancelled while leased and given back unstarted: its stock goes back now.
        ctx.record("task.released", task=task, reason=payload.reason, details={"cancelled": True})
        ctx.writes.release_stock(str(task["id"]), stock.CANCELLED_UNSTARTED)
        return "applied"
    if task["state"] != "leased":
        return _state_conflict(ctx, task, "release_after_start")
    ctx.tx.release_task(task_id=task["id"], at=ctx.now)
    ctx.record("task.released", task=task, reason=payload.reason)
    return "applied"


def _device_status(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, DeviceStatus)
    ctx.writes.equipment(
        kitchen_id=ctx.agent.kitchen_id,
        equipment_id=payload.device_id,
        kind=payload.kind,
        health=(payload.health or "ok") if payload.status == "online" else "offline",
        at=ctx.at,
    )
    ctx.record(
        f"device.{payload.health}" if payload.health else f"device.{payload.status}",
        subject=("equipment", payload.device_id),
        device_id=payload.device_id,
        reason=payload.reason,
        details={"kind": payload.kind},
    )
    return "applied"


def _alert_raised(ctx: _Context, payload: Any) -> str:
    assert isinstance(payload, AlertRaised)
    ctx.tx.insert_alert(
        agent_id=ctx.agent.agent_id,
        alert_id=payload.alert_id,
        kitchen_id=ctx.agent.kitchen_id,
        kind=payload.kind,
        severity=payload.severity,
        device_id=payload.device_id,
        message=payload.message,
        value=payload.value,
        limit_value=payload.limit,
        raised_at=ctx.at,
    )
    ctx.record(
        "alert.raised",
        subject=("alert", payload.alert_id),
        device_id=payload.device_id,
        reason=payload.kind,
        details={
            "severity": payload.severity,
            "message": payload.message,
            "value": payload.value,
            "limit": payload.limit,
        },
    )
    return "applied"


def _alert_resolved(ctx: _Context, payload: Any) -> str:
    """The condition cleared (the alert is resolved), or kitchen staff recorded what they did
    about it: the alert is acknowledged by their badge and the action is written on the HACCP
    evidence of that alert, which is what an inspector reads next to the values."""
    assert isinstance(payload, AlertResolved)
    agent_id = ctx.agent.agent_id
    if payload.reason == "condition_cleared":
        ctx.tx.resolve_alert(
            agent_id=agent_id, alert_id=payload.alert_id, resolution="condition_cleared", at=ctx.at
        )
        ctx.record("alert.resolved", subject=("alert", payload.alert_id), reason=payload.reason)
        return "applied"
    action = payload.corrective_action or "unspecified"
    ctx.tx.acknowledge_alert(
        agent_id=agent_id,
        alert_id=payload.alert_id,
        by=f"staff:{payload.acted_by}" if payload.acted_by else "staff",
        corrective_action=action,
        at=ctx.at,
    )
    covered = ctx.tx.record_haccp_corrective_action(
        agent_id=agent_id,
        alert_id=payload.alert_id,
        corrective_action=action,
        acted_by=payload.acted_by,
        acted_at=ctx.at,
    )
    ctx.record(
        "alert.corrective_action",
        subject=("alert", payload.alert_id),
        reason=action,
        details={"acted_by": payload.acted_by, "evidence_readings": covered},
    )
    return "applied"


def _haccp_evidence(ctx: _Context, payload: Any) -> str:
    """Keep each reading as the kitchen's HACCP evidence (not audited one by one: the evidence
    table is the record, and the event log keeps the event)."""
    assert isinstance(payload, HaccpEvidence)
    agent = ctx.agent
    ctx.tx.insert_haccp_evidence(
        rows=[
            (
                agent.agent_id,
                ctx.event.seq,
                index,
                agent.kitchen_id,
                reading.device_id,
                reading.probe,
                reading.value_c,
                reading.measured_at,
                ctx.now,
                reading.reason,
                reading.limit_c,
                reading.alert_id,
                reading.actor,
                # On the server's timeline, as occurred_at is: what since/until filter on.
                server_time_of(reading.measured_at, offset_s=ctx.offset_s, received_at=ctx.now),
            )
            for index, reading in enumerate(payload.readings)
        ]
    )
    return "applied"


def _stored_only(_ctx: _Context, _payload: Any) -> str:
    """Routine telemetry (``readings.summary``) and types this version parses but does not act
    on: kept in the event log, not audited one by one."""
    return "stored"


_APPLIERS: dict[str, Callable[[_Context, Any], str]] = {
    EventType.TASK_STARTED: _task_started,
    EventType.STEP_STARTED: _step,
    EventType.STEP_DONE: _step,
    EventType.TASK_DONE: _task_done,
    EventType.TASK_FAILED: _task_failed,
    EventType.TASK_RELEASED: _task_released,
    EventType.DEVICE_STATUS: _device_status,
    EventType.ALERT_RAISED: _alert_raised,
    EventType.ALERT_RESOLVED: _alert_resolved,
    EventType.HACCP_EVIDENCE: _haccp_evidence,
}
