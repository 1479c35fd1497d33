"""The control loop in a process of its own, supervised by the server that started it.

Why a process: a tick is pure Python over every open order (SLA prediction, backpressure,
re-planning). At 10,000 open orders it takes ~300 ms, and on a thread of the server it held the
interpreter lock against the event loop: every request, agent sync and order in those 300 ms
waited (measured: ``/healthz`` at one client went from 5.7 ms worst case to 62 ms, an order
from 14 ms to 180 ms, and throughput fell by 14-25%). In a process of its own it runs on the
other core and the request path never waits for it.

How it talks to the server:

- **Down, through its stdin pipe.** The first line is the server's :class:`Settings` as JSON
  (the child runs with exactly the server's settings). Every byte after it wakes the loop (an
  operator changed a backpressure override). End of file means the server is gone, killed
  with ``-9`` included: the child stops and exits, so it never outlives its server.
- **Up, through the store and the snapshot file.** Alerts, levels, re-plans and their audit
  records are written to the store as before. What the request path reads (decisions,
  predictions, the prep-time model, the loop's metrics) is published after each tick to the
  file beside the store (:mod:`control_plane.planning_snapshot`), which every server process on
  the store follows, the leader's included.

The child ignores SIGINT and SIGTERM (they reach a whole process group: Ctrl-C, a service
manager stopping the unit); it stops when its server closes its stdin or dies. The server
restarts a child that died (backoff 1 s doubling to 30 s, reset once a child has
run a minute) and counts it (``brigade_control_loop_restarts_total``). Of several servers on
one store, each starts a child; the store's control-loop lock (:mod:`control_plane.loop_lock`)
lets one of them tick while the others stand by, as before.

>>> loop = LoopProcess(settings, metrics=Metrics(), planning=PlanningState())  # doctest: +SKIP
>>> loop.start(); loop.wake(); loop.stop()                                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from prometheus_client import generate_latest

from control_plane.config import Settings
from control_plane.control_loop import ControlLoop
from control_plane.doorbell import WorkDoorbell, ring_kitchens
from control_plane.metrics import Metrics
from control_plane.planning_snapshot import PlanningFollower, path_beside, write
from control_plane.planning_state import PlanningState

__all__ = ["LoopProcess", "main"]

log = logging.getLogger("brigade.loop_process")

#: Restart backoff after a child died: first, cap, and how long a child must have run for the
#: next death to start again from the first.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0


class LoopProcess:
    """Runs the control loop as a child process and follows what it publishes.

    Same interface as :class:`~control_plane.control_loop.ControlLoop`'s thread (``start``,
    ``wake``, ``stop``), so the app does not care which one it runs."""

    def __init__(self, settings: Settings, *, metrics: Metrics, planning: PlanningState) -> None:
        self._settings = settings
        self._metrics = metrics
        self._follower = PlanningFollower(
            path_beside(settings.db_path),
            planning,
            interval_s=min(0.25, settings.control_interval_s / 4),
            on_error=metrics.planning_snapshot_errors.inc,
            # Re-planning rings the doorbells of the process it runs in: the child has no
            # agents waiting, so the rings travel with the snapshot to this one's.
            on_rings=ring_kitchens,
        )
        metrics.loop_exposition = lambda: self._follower.metrics
        metrics.planning_snapshot_age_seconds.set_function(self._follower.age_s)
        self._child: subprocess.Popen[bytes] | None = None
        self._child_lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        self._follower.poll()  # a snapshot already there (another server's loop) holds at once
        self._follower.start()
        self._spawn()
        self._supervisor = threading.Thread(
            target=self._supervise, name="control-loop-supervisor", daemon=True
        )
        self._supervisor.start()

    def wake(self) -> None:
        """Tick as soon as possible (one byte down the child's stdin)."""
        with self._child_lock:
            child = self._child
            if child is None or child.stdin is None:
                return
            try:
                child.stdin.write(b"w")
                child.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # it died: the supervisor restarts it, and a new child ticks at once

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the child's stdin (it stops after its tick), wait, kill if it does not."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout_s)
            self._supervisor = None
        with self._child_lock:
            child, self._child = self._child, None
        if child is not None:
            _close_quietly(child)
            try:
                child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error(
                    "control-loop process %d did not stop in %.0f s; killed", child.pid, timeout_s
                )
                child.kill()
                child.wait()
        self._follower.stop()

    def _spawn(self) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "control_plane.loop_process"],
            stdin=subprocess.PIPE,
            close_fds=True,
        )
        with self._child_lock:
            self._child = child
        assert child.stdin is not None
        try:
            child.stdin.write(self._settings.model_dump_json().encode() + b"\n")
            child.stdin.flush()
        except BrokenPipeError:
            return  # it died at once: the supervisor sees it and starts another
        log.info("control loop started in process %d", child.pid)

    def _supervise(self) -> None:
        backoff = RESTART_FIRST_S
        started = time.monotonic()
        while not self._stop.wait(0.5):
            child = self._child
            if child is None or child.poll() is None:
                continue
            ran_s = time.monotonic() - started
            if ran_s >= RESTART_RESET_AFTER_S:
                backoff = RESTART_FIRST_S
            log.error(
                "control-loop process %d exited with %s after %.0f s; restarting in %.0f s",
                child.pid,
                child.returncode,
                ran_s,
                backoff,
            )
            self._metrics.control_loop_restarts.inc()
            _close_quietly(child)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, RESTART_MAX_S)
            started = time.monotonic()
            try:
                self._spawn()
            except OSError:  # out of processes or memory: tried again after the backoff
                log.exception("could not start the control-loop process")


def _close_quietly(child: subprocess.Popen[bytes]) -> None:
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()


# -- the child ----------------------------------------------------------------------------------


def main() -> int:
    """The child: settings from the first line of stdin, then tick until stdin ends."""
    from control_plane.observability import configure_logging
    from control_plane.store import Store

    # Ctrl-C in a terminal, and a service manager's SIGTERM, reach the whole process group:
    # the server decides when this process stops (it closes stdin, or dies), so a server still
    # draining its requests does not lose its loop first. (SIGKILL still ends it.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    settings = Settings.model_validate_json(stdin.readline())
    configure_logging(settings.log_level)
    store = Store.open(settings.db_path)
    metrics = Metrics()
    planning = PlanningState()
    snapshot = path_beside(store.path)
    doorbell = WorkDoorbell()  # collects re-planning's rings, for the servers to ring
    loop: ControlLoop

    def publish() -> None:
        write(
            snapshot,
            planning,
            metrics=generate_latest(metrics.loop_registry),
            at=time.time(),
            prep_version=loop.prep_version,
            rings=doorbell.counts(),
        )

    loop = ControlLoop(
        store=store,
        settings=settings,
        metrics=metrics,
        planning=planning,
        clock=time.time,
        after_tick=publish,
    )
    loop.start()
    try:
        while os.read(stdin.fileno(), 64):
            loop.wake()
    finally:
        loop.stop()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
