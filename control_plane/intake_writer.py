"""Order decisions in a process of their own: the intake writer.

Why a process: deciding an order (planning it, reserving its slot and stock, its rows and its
audit records) is pure Python inside the write transaction. On the server's event loop it was
half of what the loop did per order, and the loop was the bottleneck: at 64 concurrent
clients it ran at 100% of one core while the other core was mostly idle (measured: the load
generator ~10%, the control loop ~10%). Threads would not help, as the interpreter lock lets
one of them run Python at a time. In a child process the decisions run on the other core, and
the loop only does what a read can settle.

Who does what:

- **The server** keeps everything a read settles: authentication, validation, the
  ``Idempotency-Key`` checks (``409`` in flight, replay, ``422`` reuse) and backpressure
  admission (:mod:`control_plane.intake`). An order they do not settle becomes a
  :class:`~control_plane.intake.PendingOrder`, sent down the child's stdin.
- **The child** reads every order waiting and decides them in one write transaction, each in
  its own SAVEPOINT, exactly as the in-process group commit does
  (:meth:`~control_plane.store.Store.commit_units`). It commits once (one fsync), and only then
  sends the answers back up its stdout, one frame per batch. The order, its tasks, its audit
  records and its answer under the key are one transaction, as before.
- **The server** answers each request when its answer comes back: never before the batch that
  holds it is on disk (SPEC guarantee 10).
- The prep-time model planning uses goes down with the first order after it changed (the
  control loop publishes one at most once a tick), so the child plans with the server's.

Frames: a 4-byte big-endian length, then a pickle. Both ends are this package, started by
the server from its own interpreter; nothing else writes to these pipes.

Failures:

- **The child dies** (killed, out of memory): each request waiting on it gets ``503``
  ``intake-unavailable`` with ``Retry-After: 1``. Whether its order was committed is unknown;
  a retry with the same key gets the order's answer either way (replayed if it was). The
  server starts a new child at once, then after a backoff (1 s doubling to 30 s) while they
  keep dying; meanwhile new orders get the same ``503``.
- **The child is stuck** (alive, but a wedged disk or a bug keeps it from answering): once
  its oldest order has waited ``intake_writer_timeout_s`` (60 s, longer than SQLite's 30 s
  busy timeout) it is killed, and the above follows. An answer that cannot be read kills it
  too, as every later answer would wait behind it.
- **The server dies** (``kill -9`` included): the child reads end of file, finishes the batch
  it holds and exits. Answers it can no longer deliver are stored under their keys.
- The child ignores SIGINT and SIGTERM (they reach the whole process group); the server stops
  it by closing its stdin once the server's own requests are done.

>>> FrameDecoder().feed(encode_frame(("order", 1)) + encode_frame("x")[:3])
[('order', 1)]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from control_plane.config import Settings
from control_plane.errors import BrigadeError, IntakeUnavailable
from control_plane.intake import IntakeAnswer, PendingOrder, decide
from control_plane.metrics import Metrics
from control_plane.planning.prep_times import PrepTimeModel
from control_plane.planning_state import PlanningState

__all__ = ["FrameDecoder", "IntakeWriter", "encode_frame", "main"]

log = logging.getLogger("brigade.intake_writer")

_LENGTH = struct.Struct(">I")
#: Orders decided in one transaction at most (as the in-process group commit).
MAX_BATCH = 64
#: Restart backoff after a child died: first (at once), then from 1 s doubling to the cap; a
#: child that ran this long resets it.
RESTART_NEXT_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0


def encode_frame(message: object) -> bytes:
    """One frame: the pickle's length, then the pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream back into the messages of :func:`encode_frame`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The messages completed by ``data`` (a partial frame waits for the rest)."""
        self._buffer += data
        messages: list[Any] = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            messages.append(pickle.loads(memoryview(buffer)[start + _LENGTH.size : end]))
            start = end
        del buffer[:start]
        return messages


# -- the server's side --------------------------------------------------------------------------


class _Answers(asyncio.Protocol):
    """The child's stdout, read on the server's event loop."""

    def __init__(
        self,
        on_answers: Callable[[list[Any]], None],
        on_end: Callable[[], None],
        on_garbled: Callable[[BaseException], None],
    ) -> None:
        self._decoder = FrameDecoder()
        self._on_answers = on_answers
        self._on_end = on_end
        self._on_garbled = on_garbled
        self._garbled = False

    def data_received(self, data: bytes) -> None:
        if self._garbled:
            return
        try:
            batches = self._decoder.feed(data)
        except Exception as exc:
            # Every later answer would wait behind the frame that cannot be read.
            self._garbled = True
            self._on_garbled(exc)
            return
        for batch in batches:
            self._on_answers(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_end()


class IntakeWriter:
    """Starts the intake writer process, sends it orders and hands back its answers.

    Used from one event loop, the one :meth:`start` ran on (the server's)."""

    def __init__(self, settings: Settings, *, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._requests: asyncio.WriteTransport | None = None
        self._ended: asyncio.Event | None = None
        #: Each order sent and not answered: its answer's future and when it was sent (in the
        #: order sent, so the first is the oldest).
        self._waiting: dict[int, tuple[asyncio.Future[IntakeAnswer], float]] = {}
        self._ids = itertools.count(1)
        self._prep_sent: PrepTimeModel | None = None
        self._stopping = False
        self._started_at = 0.0
        self._next_restart_s = 0.0
        self._restart: asyncio.TimerHandle | None = None
        self._respawning: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        metrics.intake_writer_waiting.set_function(lambda: len(self._waiting))

    @property
    def pid(self) -> int | None:
        """The child's process id (None while there is none)."""
        return self._child.pid if self._child is not None else None

    async def start(self) -> None:
        """Start the child; orders sent before it is ready wait in its pipe."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()
        self._watch()

    async def submit(self, pending: PendingOrder, planning: PlanningState) -> IntakeAnswer:
        """Have the child decide ``pending``; its answer, once its batch is committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError("the intake writer is used from the event loop that started it")
        requests = self._requests
        if requests is None or requests.is_closing():
            raise IntakeUnavailable(
                "order intake is restarting; retry in a second with the same Idempotency-Key"
            )
        frames = []
        model = planning.prep_model()
        if model is not self._prep_sent:
            # The estimates only: the completions each series keeps are the control loop's
            # (megabytes for a large fleet), and planning reads none of them.
            frames.append(encode_frame(("prep", model.estimates_only())))
        request_id = next(self._ids)
        frames.append(encode_frame(("order", request_id, pending)))
        answer: asyncio.Future[IntakeAnswer] = loop.create_future()
        self._waiting[request_id] = (answer, time.monotonic())
        try:
            requests.write(b"".join(frames))
            self._prep_sent = model
            return await answer
        finally:
            self._waiting.pop(request_id, None)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close the child's stdin (it decides what it holds, then exits); kill it if it has
        not exited within ``timeout_s``."""
        self._stopping = True
        for timer in (self._restart, self._watchdog):
            if timer is not None:
                timer.cancel()
        if self._respawning is not None and not self._respawning.done():
            # A child being started now: let it finish starting, then stop it like any other.
            with contextlib.suppress(Exception):
                await self._respawning
        child, ended = self._child, self._ended
        if self._requests is not None:
            self._requests.close()
        if child is None or ended is None:
            return
        try:
            await asyncio.wait_for(ended.wait(), timeout_s)
        except TimeoutError:
            log.error(
                "intake writer process %d did not stop in %.0f s; killed", child.pid, timeout_s
            )
            child.kill()
        await asyncio.get_running_loop().run_in_executor(None, child.wait)

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        child = subprocess.Popen(
            [sys.executable, "-m", "control_plane.intake_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert child.stdin is not None and child.stdout is not None
        ended = asyncio.Event()
        self._child, self._ended, self._prep_sent = child, ended, None
        self._started_at = time.monotonic()
        requests, _ = await loop.connect_write_pipe(asyncio.Protocol, child.stdin)
        await loop.connect_read_pipe(
            lambda: _Answers(
                self._answered,
                partial(self._ended_child, child, ended),
                partial(self._garbled, child),
            ),
            child.stdout,
        )
        requests.write(encode_frame(self._settings.model_dump_json()))
        self._requests = requests
        log.info("intake writer started in process %d", child.pid)

    def _answered(self, batch: list[tuple[int, bool, Any]]) -> None:
        self._metrics.intake_writer_batch_orders.observe(len(batch))
        for request_id, ok, value in batch:
            waiting, _ = self._waiting.get(request_id, (None, 0.0))
            if waiting is None or waiting.done():
                continue  # its request went away (the client disconnected)
            if ok:
                waiting.set_result(value)
            else:
                waiting.set_exception(value)

    def _garbled(self, child: subprocess.Popen[bytes], error: BaseException) -> None:
        log.error(
            "unreadable answer from intake writer process %d; killed", child.pid, exc_info=error
        )
        child.kill()  # its end of file fails what waits on it, and a new child starts

    def _watch(self) -> None:
        """Once a second: a child that has not answered its oldest order within
        ``intake_writer_timeout_s`` is stuck (a wedged disk, a bug that never returns) and
        is killed, so what waits on it gets its 503 and a new child starts."""
        assert self._loop is not None
        self._watchdog = self._loop.call_later(1.0, self._watch)
        child, timeout_s = self._child, self._settings.intake_writer_timeout_s
        oldest = next(iter(self._waiting.values()), None)
        if child is None or oldest is None or time.monotonic() - oldest[1] < timeout_s:
            return
        log.error(
            "intake writer process %d has not answered an order in %.0f s; killed",
            child.pid,
            timeout_s,
        )
        child.kill()

    def _ended_child(self, child: subprocess.Popen[bytes], ended: asyncio.Event) -> None:
        """The child's stdout ended: it exited (stopped, or died)."""
        ended.set()
        if child is not self._child:
            return
        self._child = None
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        gone = IntakeUnavailable(
            "order intake restarted while this order was being decided; retry with the same"
            " Idempotency-Key to get its answer"
        )
        for waiting, _ in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(gone)
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        ran_s = time.monotonic() - self._started_at
        if ran_s >= RESTART_RESET_AFTER_S:
            self._next_restart_s = 0.0
        delay_s, self._next_restart_s = (
            self._next_restart_s,
            min(max(self._next_restart_s * 2, RESTART_NEXT_S), RESTART_MAX_S),
        )
        log.error(
            "intake writer process %d exited after %.0f s; restarting in %.0f s",
            child.pid,
            ran_s,
            delay_s,
        )
        self._metrics.intake_writer_restarts.inc()
        loop.run_in_executor(None, child.wait)  # reaped, never a zombie
        self._restart = loop.call_later(delay_s, self._respawn)

    def _respawn(self) -> None:
        if self._stopping or self._child is not None:
            return
        if self._respawning is not None and not self._respawning.done():
            return
        task = asyncio.get_running_loop().create_task(self._spawn())
        task.add_done_callback(self._spawned)
        self._respawning = task

    def _spawned(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Out of processes or memory: tried again after the next backoff.
        log.error("could not start the intake writer process", exc_info=task.exception())
        assert self._loop is not None
        delay_s = self._next_restart_s = min(
            max(self._next_restart_s * 2, RESTART_NEXT_S), RESTART_MAX_S
        )
        self._restart = self._loop.call_later(delay_s, self._respawn)


# -- the child ----------------------------------------------------------------------------------


def _read_messages(fd: int, decoder: FrameDecoder) -> list[Any]:
    """The next messages on ``fd`` (every one waiting), blocking for one; [] at end of file."""
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            return []
        messages = decoder.feed(data)
        if messages:
            return messages


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _outcome(result: IntakeAnswer | None, error: BaseException | None) -> tuple[bool, Any]:
    if error is None:
        return True, result
    if isinstance(error, BrigadeError):
        return False, error
    # A bug: the traceback stays here, the request gets a 500 that says where to look.
    log.error("deciding an order failed", exc_info=error)
    return False, BrigadeError(
        f"deciding the order failed in the intake writer ({type(error).__name__}); see its log"
    )


def _decide_all(
    store: Any,
    messages: list[Any],
    *,
    settings: Settings,
    planning: PlanningState,
    send: Callable[[list[tuple[int, bool, Any]]], None],
) -> None:
    """Apply ``messages`` in order: a prep-time model for the orders after it, orders decided
    in batches of at most :data:`MAX_BATCH`, one commit each, whose answers are ``send``-t as
    soon as it is done."""
    batch: list[tuple[int, PendingOrder]] = []

    def commit() -> None:
        outcomes = store.commit_units(
            [partial(decide, pending=p, settings=settings, planning=planning) for _, p in batch]
        )
        send(
            [
                (request_id, *_outcome(result, error))
                for (request_id, _), (result, error) in zip(batch, outcomes, strict=True)
            ]
        )
        batch.clear()

    for message in messages:
        if message[0] == "prep":
            if batch:
                commit()  # the orders before it are planned with the model they were sent with
            planning.publish_prep_model(message[1])
            continue
        _, request_id, pending = message
        batch.append((request_id, pending))
        if len(batch) >= MAX_BATCH:
            commit()
    if batch:
        commit()


def main() -> int:
    """The child: settings in the first frame on stdin, then orders until stdin ends."""
    from control_plane.observability import configure_logging
    from control_plane.store import Store

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers go up the original stdout; anything printed goes to stderr, never into a frame.
    answers_fd = os.dup(1)
    os.dup2(2, 1)
    decoder = FrameDecoder()
    messages = _read_messages(0, decoder)
    if not messages:
        return 0
    settings = Settings.model_validate_json(messages.pop(0))
    configure_logging(settings.log_level)
    store = Store(settings.db_path)  # migrated by the server that started this process
    planning = PlanningState()
    # As in the server: what exists now lives as long as the process, out of the cyclic
    # collector's reach, so its full collections scan only what the orders allocate.
    gc.collect()
    gc.freeze()

    def send(answers: list[tuple[int, bool, Any]]) -> None:
        with contextlib.suppress(BrokenPipeError):  # the server is gone: stdin ends next
            _write_all(answers_fd, encode_frame(answers))

    try:
        while messages or (messages := _read_messages(0, decoder)):
            _decide_all(store, messages, settings=settings, planning=planning, send=send)
            messages = []
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
