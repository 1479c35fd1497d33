"""Retry schedule as a pure computation: capped exponential backoff with full jitter.

>>> import random
>>> delay = backoff_delay(3, base_s=1.0, cap_s=30.0, rng=random.Random(7))
>>> 0.0 <= delay <= 8.0
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff_delay(
    attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Seconds before retry ``attempt`` (0-based): uniform in [0, min(cap, base * 2**attempt)].

    Full jitter spreads a fleet of agents that lost the control plane at the same moment.
    """
    ceiling = min(cap_s, base_s * (2 ** min(max(attempt, 0), 32)))
    return (rng or random).uniform(0.0, ceiling)


@dataclass
class Backoff:
    """A retry counter over :func:`backoff_delay`; ``reset()`` after a success.

    ``floor_s`` lets a server's ``Retry-After`` raise the next delay without lowering it.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random | None = None
    attempt: int = 0

    def next_delay(self, *, floor_s: float = 0.0) -> float:
        delay = backoff_delay(self.attempt, base_s=self.base_s, cap_s=self.cap_s, rng=self.rng)
        self.attempt += 1
        if floor_s > 0:
            # Retry-After is a minimum; up to 10 % jitter on top keeps agents out of lockstep.
            return floor_s + (self.rng or random).uniform(0.0, floor_s * 0.1)
        return delay

    def reset(self) -> None:
        self.attempt = 0
