"""Seeded order demand for a kitchen day: a daily curve with a lunch and a dinner rush, spikes,
a SKU mix with priorities. Pure: the same profile and seed give the same orders, and nothing here
reads a clock or talks to a server (:mod:`simulators.scenarios` posts them).

The rate is orders per hour of the kitchen day (``0 <= hour < 24``); arrivals are a
non-homogeneous Poisson process drawn by thinning, so the count in any hour follows the curve.
A scenario compresses the day into ``run_s`` real seconds with :func:`compress`.

>>> profile = DemandProfile(base_per_h=10, sku_mix=(SkuShare("fries", 1.0),))
>>> orders = generate(profile, seed=1, start_h=11, end_h=14)
>>> orders == generate(profile, seed=1, start_h=11, end_h=14)
True
>>> rate_at(profile, 12.5) > rate_at(profile, 9.0)
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

Priority = str  # "low" | "normal" | "high", as the control plane's orders take it


@dataclass(frozen=True, slots=True)
class SkuShare:
    """One SKU of the mix: its share of orders, priority and quantity range."""

    sku_id: str
    weight: float
    priority: Priority = "normal"
    min_quantity: int = 1
    max_quantity: int = 4


@dataclass(frozen=True, slots=True)
class Rush:
    """A bell-shaped peak: ``extra_per_h`` on top of the base at ``peak_h``, ``width_h`` wide
    (standard deviation)."""

    peak_h: float
    width_h: float
    extra_per_h: float


@dataclass(frozen=True, slots=True)
class Spike:
    """A burst (a big catering order, a promotion): the rate times ``factor`` for a while."""

    start_h: float
    duration_h: float
    factor: float


@dataclass(frozen=True, slots=True)
class DemandProfile:
    """The shape of a kitchen day's demand."""

    base_per_h: float = 6.0
    rushes: tuple[Rush, ...] = (Rush(12.5, 0.75, 30.0), Rush(19.0, 1.0, 24.0))
    spikes: tuple[Spike, ...] = ()
    #: The kitchen is closed outside these hours.
    open_h: float = 7.0
    close_h: float = 23.0
    sku_mix: tuple[SkuShare, ...] = field(default_factory=tuple)
    #: Promise (minutes from submission, in kitchen-day minutes) and transport time ranges.
    promise_min: tuple[float, float] = (25.0, 60.0)
    transport_min: tuple[float, float] = (5.0, 20.0)
    destinations: int = 5

    def scaled(self, factor: float) -> DemandProfile:
        """The same curve with every rate multiplied by ``factor`` (a busier or quieter day)."""
        return replace(
            self,
            base_per_h=self.base_per_h * factor,
            rushes=tuple(replace(r, extra_per_h=r.extra_per_h * factor) for r in self.rushes),
        )


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    """One order to submit: ``at_h`` into the kitchen day; durations in kitchen-day minutes."""

    at_h: float
    sku_id: str
    quantity: int
    priority: Priority
    promise_min: float
    transport_min: float
    destination: str
    key: str


def rate_at(profile: DemandProfile, hour: float) -> float:
    """Orders per hour at ``hour`` of the day: base plus rushes, times any spike; 0 when closed."""
    if not profile.open_h <= hour < profile.close_h:
        return 0.0
    rate = profile.base_per_h
    for rush in profile.rushes:
        rate += rush.extra_per_h * math.exp(-0.5 * ((hour - rush.peak_h) / rush.width_h) ** 2)
    for spike in profile.spikes:
        if spike.start_h <= hour < spike.start_h + spike.duration_h:
            rate *= spike.factor
    return max(0.0, rate)


def peak_rate(profile: DemandProfile) -> float:
    """An upper bound of :func:`rate_at` over the day (for thinning)."""
    bound = profile.base_per_h + sum(r.extra_per_h for r in profile.rushes)
    for spike in profile.spikes:
        bound *= max(1.0, spike.factor)
    return bound


def generate(
    profile: DemandProfile, *, seed: int, start_h: float = 0.0, end_h: float = 24.0
) -> list[PlannedOrder]:
    """The orders of ``[start_h, end_h)`` of the day, in time order, reproducible by ``seed``."""
    if not profile.sku_mix:
        raise ValueError("a demand profile needs at least one SKU in its mix")
    rng = random.Random(seed)
    ceiling = peak_rate(profile)
    orders: list[PlannedOrder] = []
    if ceiling <= 0:
        return orders
    weights = [share.weight for share in profile.sku_mix]
    hour = start_h
    while True:
        hour += rng.expovariate(ceiling)
        if hour >= end_h:
            return orders
        # Thinning: keep a candidate arrival with probability rate(t) / ceiling.
        if rng.random() * ceiling > rate_at(profile, hour):
            continue
        share = rng.choices(profile.sku_mix, weights=weights)[0]
        orders.append(
            PlannedOrder(
                at_h=hour,
                sku_id=share.sku_id,
                quantity=rng.randint(share.min_quantity, share.max_quantity),
                priority=share.priority,
                promise_min=rng.uniform(*profile.promise_min),
                transport_min=rng.uniform(*profile.transport_min),
                destination=f"store-{rng.randint(1, profile.destinations)}",
                key=f"{seed}-{len(orders):06d}-{rng.getrandbits(48):012x}",
            )
        )


@dataclass(frozen=True, slots=True)
class TimeCompression:
    """A kitchen day's ``[start_h, end_h)`` played in ``run_s`` real seconds.

    >>> tc = TimeCompression(start_h=11, end_h=15, run_s=120)
    >>> tc.real_s(13.0), tc.kitchen_minutes(1.0)
    (60.0, 2.0)
    """

    start_h: float
    end_h: float
    run_s: float

    @property
    def factor(self) -> float:
        """Kitchen-day seconds per real second."""
        return (self.end_h - self.start_h) * 3600.0 / self.run_s

    def real_s(self, hour: float) -> float:
        """Real seconds from the start of the run at which ``hour`` of the day is played."""
        return (hour - self.start_h) * 3600.0 / self.factor

    def kitchen_minutes(self, real_s: float) -> float:
        """Kitchen-day minutes that ``real_s`` real seconds stand for."""
        return real_s * self.factor / 60.0

    def real_seconds(self, kitchen_minutes: float) -> float:
        """Real seconds that ``kitchen_minutes`` of the day take in the run."""
        return kitchen_minutes * 60.0 / self.factor


def compress(orders: list[PlannedOrder], tc: TimeCompression) -> list[tuple[float, PlannedOrder]]:
    """``(real offset s, order)`` for each order inside the compressed window."""
    return [(tc.real_s(o.at_h), o) for o in orders if tc.start_h <= o.at_h < tc.end_h]
