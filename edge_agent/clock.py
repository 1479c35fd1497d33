"""The clock seam: the monotonic clock for deadlines, the wall clock for timestamps."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the agent reads time from; tests may pass a fake."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """``time.monotonic`` (CLOCK_MONOTONIC: shared by every process of one boot, so a restarted
    agent can still compare deadlines its predecessor persisted) and ``time.time``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()
