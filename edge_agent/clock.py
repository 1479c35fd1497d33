"""The clock seam: the monotonic clock for deadlines, the wall clock for timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """What the agent reads time from; tests may pass a fake."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


def _boot_clock() -> Callable[[], float]:
    """``CLOCK_BOOTTIME`` where there is one (Linux): like ``CLOCK_MONOTONIC`` it never jumps
    and is shared by every process of one boot, but it keeps counting while the box is
    suspended, so a start-by deadline cannot be stretched by a suspend. Elsewhere
    ``time.monotonic``."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            time.clock_gettime(boottime)
        except OSError:
            pass
        else:
            return lambda: time.clock_gettime(boottime)
    return time.monotonic


class SystemClock:
    """The boot clock (see :func:`_boot_clock`; comparable across agent restarts within one
    boot, so a restarted agent can still compare deadlines its predecessor persisted) and
    ``time.time``."""

    def __init__(self) -> None:
        self._monotonic = _boot_clock()

    def monotonic(self) -> float:
        return self._monotonic()

    def wall(self) -> float:
        return time.time()
