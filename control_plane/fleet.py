"""Agents as operators see them: reachability, stranded tasks, the agent view.

A kitchen's agent is *reachable* while it syncs: its last sync is at most
``agent_unreachable_after_s`` old and it is not revoked. A task leased or started by an
unreachable agent is *stranded*: the kitchen is probably still cooking it, so the control plane
never moves it by itself (SPEC guarantee 3); it is flagged, and only an operator's reassignment
(:func:`control_plane.leases.reassign`) moves it.

>>> reachable(last_seen_at=100.0, revoked=False, now=150.0, unreachable_after_s=120.0)
True
>>> stranded("started", last_seen_at=100.0, revoked=False, now=400.0, unreachable_after_s=120.0)
True
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

from control_plane import audit
from control_plane.audit import iso
from control_plane.errors import NotFound, StateConflict
from control_plane.queries import Reader
from control_plane.store import Store

#: Task states in which a kitchen holds the task (and may be cooking it).
HELD_STATES = ("leased", "started")


def reachable(
    *, last_seen_at: float | None, revoked: bool, now: float, unreachable_after_s: float
) -> bool:
    """Whether an agent counts as reachable at ``now``."""
    return not revoked and last_seen_at is not None and now - last_seen_at <= unreachable_after_s


def stranded(
    state: str,
    *,
    last_seen_at: float | None,
    revoked: bool,
    now: float,
    unreachable_after_s: float,
) -> bool:
    """Whether a task in ``state``, held by an agent last seen at ``last_seen_at``, is stranded."""
    return state in HELD_STATES and not reachable(
        last_seen_at=last_seen_at,
        revoked=revoked,
        now=now,
        unreachable_after_s=unreachable_after_s,
    )


def task_is_stranded(
    reader: Reader, task: sqlite3.Row, *, now: float, unreachable_after_s: float
) -> bool:
    """:func:`stranded` for a stored task, looking up its lease holder."""
    if task["state"] not in HELD_STATES or task["lease_agent_id"] is None:
        return False
    agent = reader.agent(str(task["lease_agent_id"]))
    return stranded(
        str(task["state"]),
        last_seen_at=None if agent is None else agent["last_seen_at"],
        revoked=agent is None or bool(agent["revoked"]),
        now=now,
        unreachable_after_s=unreachable_after_s,
    )


def stale_agent_ids(reader: Reader, *, now: float, unreachable_after_s: float) -> list[str]:
    """Every agent that is not reachable now (so the tasks it holds are stranded)."""
    return [
        str(row["id"])
        for row in reader.agents()
        if not reachable(
            last_seen_at=row["last_seen_at"],
            revoked=bool(row["revoked"]),
            now=now,
            unreachable_after_s=unreachable_after_s,
        )
    ]


def kitchen_last_sync(reader: Reader, kitchen_id: str) -> float | None:
    """When an unrevoked agent of the kitchen last synced."""
    seen = [
        float(row["last_seen_at"])
        for row in reader.agents(kitchen_id=kitchen_id)
        if row["last_seen_at"] is not None and not row["revoked"]
    ]
    return max(seen, default=None)


def agent_view(row: sqlite3.Row, *, now: float, unreachable_after_s: float) -> dict[str, Any]:
    """One agent as the operators' API shows it (never its credential)."""
    reconnect = json.loads(row["reconnect_json"]) if row["reconnect_json"] else None
    if reconnect is not None:
        reconnect = {
            **reconnect,
            "started_at": iso(reconnect["started_at"]),
            "finished_at": iso(reconnect["finished_at"]),
        }
    return {
        "id": row["id"],
        "kitchen_id": row["kitchen_id"],
        "name": row["name"],
        "agent_version": row["agent_version"],
        "enrolled_at": iso(row["enrolled_at"]),
        "last_seen_at": iso(row["last_seen_at"]),
        "reachable": reachable(
            last_seen_at=row["last_seen_at"],
            revoked=bool(row["revoked"]),
            now=now,
            unreachable_after_s=unreachable_after_s,
        ),
        "revoked": bool(row["revoked"]),
        "revoked_at": iso(row["revoked_at"]),
        "last_acked_seq": row["last_acked_seq"],
        "outbox_depth": row["outbox_depth"],
        "clock_offset_s": row["clock_offset_s"],
        "clock_samples": row["clock_samples"],
        "reconnect": reconnect,
        "events_unrecoverable": None
        if row["unrecoverable_from_seq"] is None
        else {
            "from_seq": row["unrecoverable_from_seq"],
            "to_seq": row["unrecoverable_to_seq"],
            "detected_at": iso(row["unrecoverable_detected_at"]),
        },
    }


def accept_gap(
    store: Store,
    agent_id: str,
    *,
    reason: str,
    now: float,
    actor: str,
    unreachable_after_s: float,
) -> dict[str, Any]:
    """An operator's decision that an agent's ``events_unrecoverable`` gap is lost for good:
    ``last_acked_seq`` moves past it, so the agent's later events are applied again. Audited.
    """
    with store.write() as tx:
        row = tx.agent(agent_id)
        if row is None:
            raise NotFound(f"no agent {agent_id!r}")
        if row["unrecoverable_from_seq"] is None:
            raise StateConflict(
                f"agent {agent_id} has no unrecoverable gap to accept",
                reason="no_unrecoverable_gap",
            )
        from_seq, to_seq = int(row["unrecoverable_from_seq"]), int(row["unrecoverable_to_seq"])
        tx.set_agent_acked_seq(agent_id=agent_id, last_acked_seq=max(to_seq, row["last_acked_seq"]))
        tx.set_agent_unrecoverable(agent_id=agent_id, from_seq=None, to_seq=None, at=None)
        tx.set_agent_stalled(agent_id=agent_id, first_seq=None, syncs=0)
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="agent.gap_accepted",
            subject_type="agent",
            subject_id=agent_id,
            kitchen_id=row["kitchen_id"],
            reason=reason,
            details={
                "from_seq": from_seq,
                "to_seq": to_seq,
                "previous_last_acked_seq": row["last_acked_seq"],
            },
        )
        updated = tx.agent(agent_id)
        assert updated is not None
        return agent_view(updated, now=now, unreachable_after_s=unreachable_after_s)


# -- sync pacing: a large fleet is asked to sync less often, so its load stays within budget

#: Agents count as active for pacing while they synced within this many seconds.
PACING_WINDOW_S = 60.0


def advised_sync_interval(
    active_agents: int, *, budget_per_s: float, floor_s: float, cap_s: float
) -> float | None:
    """Seconds between one agent's syncs that keep ``active_agents`` within ``budget_per_s``
    syncs a second; ``None`` while the agents' own interval (``floor_s``) already does.

    >>> advised_sync_interval(300, budget_per_s=200, floor_s=2.0, cap_s=30.0) is None
    True
    >>> advised_sync_interval(2000, budget_per_s=200, floor_s=2.0, cap_s=30.0)
    10.0
    >>> advised_sync_interval(100_000, budget_per_s=200, floor_s=2.0, cap_s=30.0)
    30.0
    """
    interval = active_agents / budget_per_s
    if interval <= floor_s:
        return None
    return min(interval, cap_s)


class SyncPacer:
    """Counts the agents syncing lately and advises each the interval that spreads their syncs
    over the budget (:func:`advised_sync_interval`). In memory, per process; after a restart it
    is seeded from the agents' stored last syncs (:meth:`seed`), so a large fleet is paced from
    its first answer instead of being invited back at its own interval all at once.
    Thread-safe (sync requests run in a thread pool).
    """

    def __init__(
        self,
        *,
        budget_per_s: float,
        floor_s: float = 2.0,
        cap_s: float = 30.0,
        window_s: float = PACING_WINDOW_S,
    ) -> None:
        self._budget_per_s = budget_per_s
        self._floor_s = floor_s
        self._cap_s = cap_s
        self._window_s = window_s
        self._last_seen: dict[str, float] = {}
        self._pruned_at = 0.0
        self._lock = threading.Lock()

    def seed(self, last_syncs: dict[str, float], *, now: float) -> None:
        """Count agents that synced ``age`` seconds ago (``last_syncs``: agent id -> age) as
        seen at ``now - age`` (monotonic), unless seen since."""
        with self._lock:
            for agent_id, age_s in last_syncs.items():
                if age_s <= self._window_s:
                    self._last_seen.setdefault(agent_id, now - max(age_s, 0.0))

    def observe(self, agent_id: str, *, now: float) -> float | None:
        """Record a sync of ``agent_id`` at ``now`` (monotonic seconds); the advised interval."""
        with self._lock:
            self._last_seen[agent_id] = now
            if now - self._pruned_at >= self._window_s / 4:
                horizon = now - self._window_s
                self._last_seen = {a: t for a, t in self._last_seen.items() if t >= horizon}
                self._pruned_at = now
            active = len(self._last_seen)
        return advised_sync_interval(
            active, budget_per_s=self._budget_per_s, floor_s=self._floor_s, cap_s=self._cap_s
        )
