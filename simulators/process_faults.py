"""Process faults on purpose: crash, restart and freeze the broker, the control plane and agents.

Each of :class:`~simulators.processes.ManagedProcess`, :class:`~simulators.broker.Broker` and
:class:`~simulators.services.ControlPlane` has ``start()``, ``stop()`` (SIGTERM, then SIGKILL)
and ``kill()`` (SIGKILL of the process group: a crash or a power cut). These helpers compose them
the way the chaos scenarios need, always by PID and bounded in time.

>>> with crashed(broker):  # doctest: +SKIP
...     ...  # the broker is down (SIGKILL, nothing saved since its last autosave)
>>> # and back on the same port with the same persistence here
>>> restart(control_plane, crash=True)  # doctest: +SKIP
>>> with frozen(agent):  # doctest: +SKIP
...     ...  # the agent is SIGSTOPped: its sockets are open, it answers nothing
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Protocol

from simulators.processes import ManagedProcess, wait_until


class Restartable(Protocol):
    """Anything that can be started, stopped gracefully and killed."""

    def start(self) -> object: ...

    def stop(self) -> object: ...

    def kill(self) -> object: ...


def restart(
    service: Restartable,
    *,
    crash: bool = False,
    ready: Callable[[], bool] | None = None,
    timeout: float = 20.0,
) -> None:
    """Stop (``crash=True``: SIGKILL) and start ``service`` again; then wait for ``ready``.

    The broker and the control plane wait for their own readiness in ``start()``; an agent's
    ``ready`` is up to the caller (e.g. its retained ``online`` status seen on the bus).
    """
    if crash:
        service.kill()
    else:
        service.stop()
    service.start()
    if ready is not None:
        wait_until(ready, timeout=timeout, what="the restarted service to be ready")


@contextlib.contextmanager
def crashed(
    service: Restartable,
    *,
    graceful: bool = False,
    ready: Callable[[], bool] | None = None,
    timeout: float = 20.0,
) -> Iterator[None]:
    """Down inside the block (SIGKILL, or SIGTERM with ``graceful``), started again after it."""
    if graceful:
        service.stop()
    else:
        service.kill()
    try:
        yield
    finally:
        service.start()
        if ready is not None:
            wait_until(ready, timeout=timeout, what="the restarted service to be ready")


def _signal_group(process: ManagedProcess, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@contextlib.contextmanager
def frozen(process: ManagedProcess) -> Iterator[None]:
    """SIGSTOP the process group inside the block (a hung process: sockets stay open, nothing
    is answered, keepalives stop), SIGCONT after it."""
    _signal_group(process, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_group(process, signal.SIGCONT)


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` from /proc (``R``, ``S``, ``T`` stopped, ``Z``...)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name may contain spaces and parentheses: the state follows the last ')'.
        return stat.read().rsplit(")", 1)[1].split()[0]
