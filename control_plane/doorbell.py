"""The work doorbell: agents long-poll to hear at once that their kitchen has new work.

An agent learns of work only by syncing (``POST /v1/agents/sync``). Syncing every second or
less is more than a fleet can afford, so an agent also holds ``GET /v1/agents/work`` open; it
is answered as soon as the *work version* of its kitchen changes, and the agent syncs then.
The doorbell is a hint and never a path for work: leases, renewals and cancellations travel
only in syncs, so an agent that never hears it (or a lost ring) syncs at its interval as before.

A kitchen's work version is a counter in this process's memory, bumped (:func:`ring_kitchens`)
once work an agent of the kitchen could lease or must hear of has changed: intake planned a
task there, re-planning moved one to or from it, an order with tasks there was cancelled. It
is shown with an epoch drawn when the process starts (``"3f9a1c2e.17"``), so after a restart
every agent's version differs and it syncs once: an agent compares versions for equality only.

Waiting holds no database connection and no thread: one :class:`asyncio.Event` per waiter, set
through its loop's ``call_soon_threadsafe`` because rings come from the thread pool (intake,
cancellation) and the control loop's thread. Each agent has at most one waiter: a second wait
ends the first (answered at once), so waiters never outnumber enrolled agents.

>>> bell = WorkDoorbell(epoch="e1")
>>> bell.version("k1")
'e1.0'
>>> _ = bell.ring(["k1"])
>>> bell.version("k1"), bell.version("k2")
('e1.1', 'e1.0')
>>> next_lease_at([100.0, 900.0, 2000.0], now=0.0, horizon_s=600.0)
300.0
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from control_plane.queries import Reader
from protocol.sync_api import MAX_WORK_WAIT_S

__all__ = [
    "MAX_WAIT_S",
    "WorkDoorbell",
    "WorkSignal",
    "next_lease_at",
    "ring_kitchens",
    "upcoming_lease_at",
]

#: Longest a doorbell request is held, whatever the agent asks: below the idle timeouts of
#: common proxies and load balancers (30-60 s), so a held request is not cut as idle.
MAX_WAIT_S = MAX_WORK_WAIT_S
#: Planned tasks looked at for the next one to enter the lease horizon (those already in it are
#: the agent's to lease now; a queue longer than this is answered with no time).
UPCOMING_TASKS = 32


@dataclass(frozen=True)
class WorkSignal:
    """The answer to one wait: the kitchen's version now, whether it differs from the one the
    agent holds, and why the wait ended (``changed``, ``rung``, ``timeout``, ``replaced``,
    ``evicted``: a label of the wakeups metric)."""

    version: str
    changed: bool
    woke: str


@dataclass(eq=False)
class _Waiter:
    """One held request: its kitchen, and the event of the loop it waits on."""

    kitchen_id: str
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    woke: str | None = None

    def wake(self, why: str) -> None:
        """Wake it from any thread (the first reason given is kept); the caller holds the lock."""
        if self.woke is not None:
            return
        self.woke = why
        # The loop may have closed under a waiter whose request died with it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


class WorkDoorbell:
    """Per-kitchen work versions of this process and the agents waiting on them (thread-safe).

    ``epoch`` tells this process's versions from another's (default: random, per process).
    """

    def __init__(self, *, epoch: str | None = None) -> None:
        self.epoch = epoch if epoch is not None else secrets.token_hex(4)
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self._waiters: dict[str, _Waiter] = {}
        #: The same waiters by kitchen: a ring (one per order) touches only its kitchens'.
        self._by_kitchen: dict[str, set[_Waiter]] = {}
        self._closed = False
        _register(self)

    def version(self, kitchen_id: str) -> str:
        """The kitchen's work version now."""
        with self._lock:
            return self._version(kitchen_id)

    def _version(self, kitchen_id: str) -> str:
        return f"{self.epoch}.{self._counters.get(kitchen_id, 0)}"

    @property
    def waiting(self) -> int:
        """Requests waiting now (the waiters gauge)."""
        with self._lock:
            return len(self._waiters)

    def ring(self, kitchen_ids: Iterable[str]) -> int:
        """Bump each kitchen's version and wake its waiters; returns how many were woken.
        Call it once the change is committed (or is sure to be seen by any later sync)."""
        kitchens = set(kitchen_ids)
        if not kitchens:
            return 0
        with self._lock:
            woken = 0
            for kitchen_id in kitchens:
                self._counters[kitchen_id] = self._counters.get(kitchen_id, 0) + 1
                for waiter in self._by_kitchen.get(kitchen_id, ()):
                    waiter.wake("rung")
                    woken += 1
        return woken

    def counts(self) -> dict[str, int]:
        """How often each kitchen was rung here (a process without agents, the control loop's,
        passes its rings on to the servers through its snapshot)."""
        with self._lock:
            return dict(self._counters)

    def close(self) -> None:
        """The server is stopping: answer every wait now and every later one at once, so held
        requests do not keep a graceful shutdown waiting for their timeout."""
        with self._lock:
            self._closed = True
            for waiter in self._waiters.values():
                waiter.wake("shutdown")

    def evict(self, agent_id: str) -> bool:
        """End the agent's wait now (its credential was revoked, say)."""
        with self._lock:
            waiter = self._waiters.get(agent_id)
            if waiter is not None:
                waiter.wake("evicted")
        return waiter is not None

    async def wait(
        self, *, agent_id: str, kitchen_id: str, since: str | None, timeout_s: float
    ) -> WorkSignal:
        """Wait until the kitchen's version differs from ``since`` (at once if it already does,
        or ``since`` is None), for at most ``timeout_s``; a newer wait of the same agent, or
        :meth:`evict`, ends it early. Cancelling the caller removes the waiter."""
        with self._lock:
            current = self._version(kitchen_id)
            if since != current:
                return WorkSignal(current, True, "changed")
            if self._closed:
                return WorkSignal(current, False, "shutdown")
            if timeout_s <= 0:
                return WorkSignal(current, False, "timeout")
            waiter = _Waiter(kitchen_id, asyncio.get_running_loop())
            previous = self._waiters.get(agent_id)
            if previous is not None:
                previous.wake("replaced")
            self._waiters[agent_id] = waiter
            self._by_kitchen.setdefault(kitchen_id, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter.event.wait(), timeout=timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if self._waiters.get(agent_id) is waiter:
                    del self._waiters[agent_id]
                same_kitchen = self._by_kitchen.get(kitchen_id)
                if same_kitchen is not None:
                    same_kitchen.discard(waiter)
                    if not same_kitchen:
                        del self._by_kitchen[kitchen_id]
                woke = waiter.woke or "timeout"
                current = self._version(kitchen_id)
        return WorkSignal(current, current != since, woke)


def next_lease_at(start_afters: Iterable[float], *, now: float, horizon_s: float) -> float | None:
    """When the first of these planned tasks that is not leasable yet enters the lease horizon
    (a task is leasable from ``start_after - horizon_s``); None when none is still to enter.

    >>> next_lease_at([10.0, 700.0], now=0.0, horizon_s=600.0)
    100.0
    >>> next_lease_at([10.0], now=0.0, horizon_s=600.0) is None
    True
    """
    entries = (start - horizon_s for start in start_afters if math.isfinite(start))
    return min((at for at in entries if at > now), default=None)


def upcoming_lease_at(
    reader: Reader, *, kitchen_id: str, now: float, horizon_s: float
) -> float | None:
    """:func:`next_lease_at` over the kitchen's first planned tasks (one indexed read)."""
    rows = reader.leasable_tasks(
        kitchen_id=kitchen_id, start_after_until=math.inf, limit=UPCOMING_TASKS
    )
    return next_lease_at((float(row["start_after"]) for row in rows), now=now, horizon_s=horizon_s)


# -- the process's doorbells -------------------------------------------------------------------
# Work changes where only the store (or a transaction) is at hand: intake, cancellation, the
# control loop's re-planning. Versions are per process anyway, so every doorbell of the process
# hears every ring; in tests that run several apps at once, a ring for a kitchen id another
# app also has only costs that app's agent one extra sync.
_DOORBELLS: weakref.WeakSet[WorkDoorbell] = weakref.WeakSet()
_DOORBELLS_LOCK = threading.Lock()


def _register(doorbell: WorkDoorbell) -> None:
    with _DOORBELLS_LOCK:
        _DOORBELLS.add(doorbell)


def ring_kitchens(kitchen_ids: Iterable[str | None]) -> None:
    """Ring every doorbell of this process for these kitchens (``None`` ids are skipped)."""
    kitchens = {k for k in kitchen_ids if k is not None}
    if not kitchens:
        return
    with _DOORBELLS_LOCK:
        doorbells = list(_DOORBELLS)
    for doorbell in doorbells:
        doorbell.ring(kitchens)
