"""Learned prep times: p50/p90 per kitchen x SKU, falling back to the SKU, then the recipe.

Pure and immutable: :func:`observe` takes the model, ``now`` and one completed task
(started -> done, from the agent's events) and returns a new model; :meth:`PrepTimeModel.estimate`
answers the planner and the SLA engine.

How the estimate is made, and why:

- **A window per series.** Each series (one kitchen x SKU, and one per SKU across kitchens)
  keeps the ``window`` most recent completions *by completion time*, not by arrival. A completion
  reported late (after days offline) lands where it belongs in time, so out-of-order arrival
  cannot skew recency: the estimates are the same whatever order the observations arrive in.
- **Recency weighting.** Each kept completion weighs ``0.5 ** (age / half_life_s)``, where the
  age is measured from the series' newest completion (not from ``now``, so a quiet kitchen does
  not lose its history), and p50/p90 are weighted quantiles. Slow drifts are followed.
- **Outliers.** A completion longer than ``outlier_factor`` x the weighted median (a forgotten
  "done" button) or shorter than the median / ``outlier_factor`` (a double tap) is excluded
  from the quantiles and counted. The median resists up to half the window being outliers.
- **Clock skew.** A completion dated after ``now`` is clamped to ``now``, so one agent with a
  clock in the future cannot make the whole history look old.
- **Error.** Before each observation is learned, the current estimate is scored against it:
  mean absolute error, bias (mean of actual - predicted p50) and p90 coverage, per series.

>>> model = PrepTimeModel()
>>> for n in range(20):
...     model = observe(model, 10_000.0, PrepObservation("k1", "burger", n * 60.0, n * 60.0 + 300))
>>> model.estimate("k1", "burger", nominal_s=240.0).p50_s
300.0
>>> model.estimate("k2", "burger", nominal_s=240.0).source
'sku'
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

# Without data the p90 of a recipe's nominal duration is this much longer than the nominal.
NOMINAL_P90_FACTOR = 1.25


@dataclass(frozen=True)
class PrepObservation:
    """One completed task: where, what, and when it started and finished (agent time)."""

    kitchen_id: str
    sku_id: str
    started_at: float
    done_at: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.done_at - self.started_at)


@dataclass(frozen=True)
class PrepEstimate:
    """A prediction: median and 90th percentile of the prep duration, and where it came from."""

    p50_s: float
    p90_s: float
    source: str  # kitchen_sku | sku | nominal
    samples: int


@dataclass(frozen=True)
class PredictionError:
    """How well the estimates predicted what then happened (actual - predicted p50)."""

    count: int = 0
    abs_error_sum_s: float = 0.0
    error_sum_s: float = 0.0
    within_p90: int = 0

    @property
    def mean_abs_error_s(self) -> float:
        return self.abs_error_sum_s / self.count if self.count else 0.0

    @property
    def bias_s(self) -> float:
        """Positive: the kitchen is slower than predicted."""
        return self.error_sum_s / self.count if self.count else 0.0

    @property
    def p90_coverage(self) -> float:
        """Share of completions that finished within the predicted p90 (ideal: 0.9)."""
        return self.within_p90 / self.count if self.count else 0.0

    def scored(self, predicted: PrepEstimate, actual_s: float) -> PredictionError:
        error = actual_s - predicted.p50_s
        return PredictionError(
            self.count + 1,
            self.abs_error_sum_s + abs(error),
            self.error_sum_s + error,
            self.within_p90 + (actual_s <= predicted.p90_s),
        )


@dataclass(frozen=True)
class PrepSeries:
    """The kept completions of one series, sorted by (done_at, duration), and its estimate."""

    completions: tuple[tuple[float, float], ...] = ()  # (done_at, duration_s)
    estimate: PrepEstimate | None = None
    outliers: int = 0
    stale_dropped: int = 0


@dataclass(frozen=True)
class PrepSettings:
    """Tuning of the estimator."""

    window: int = 128
    half_life_s: float = 3 * 24 * 3600.0
    outlier_factor: float = 4.0
    min_samples: int = 5


@dataclass(frozen=True)
class PrepTimeModel:
    """Every series, its prediction error, and the settings. Replace, never mutate."""

    settings: PrepSettings = field(default_factory=PrepSettings)
    by_kitchen_sku: Mapping[tuple[str, str], PrepSeries] = field(default_factory=dict)
    by_sku: Mapping[str, PrepSeries] = field(default_factory=dict)
    errors: Mapping[tuple[str, str], PredictionError] = field(default_factory=dict)

    def estimate(self, kitchen_id: str, sku_id: str, *, nominal_s: float) -> PrepEstimate:
        """p50/p90 for ``sku_id`` at ``kitchen_id``: learned there, else across kitchens, else
        from the recipe's nominal duration."""
        own = self.by_kitchen_sku.get((kitchen_id, sku_id))
        if own is not None and own.estimate is not None:
            return own.estimate
        shared = self.by_sku.get(sku_id)
        if shared is not None and shared.estimate is not None:
            return replace(shared.estimate, source="sku")
        return PrepEstimate(nominal_s, nominal_s * NOMINAL_P90_FACTOR, "nominal", 0)

    def estimates_only(self) -> PrepTimeModel:
        """The same :meth:`estimate` for every kitchen and SKU, without the completions and
        errors behind it: what planning reads, small enough to send to another process.

        >>> series = PrepSeries(((1.0, 300.0),), PrepEstimate(300.0, 330.0, "kitchen_sku", 1))
        >>> slim = PrepTimeModel(by_kitchen_sku={("k1", "soup"): series}).estimates_only()
        >>> slim.by_kitchen_sku[("k1", "soup")].completions
        ()
        >>> slim.estimate("k1", "soup", nominal_s=9)
        PrepEstimate(p50_s=300.0, p90_s=330.0, source='kitchen_sku', samples=1)
        """
        return PrepTimeModel(
            self.settings,
            {key: PrepSeries(estimate=s.estimate) for key, s in self.by_kitchen_sku.items()},
            {key: PrepSeries(estimate=s.estimate) for key, s in self.by_sku.items()},
        )

    def error_of(self, kitchen_id: str, sku_id: str) -> PredictionError:
        """Prediction error of one kitchen x SKU so far."""
        return self.errors.get((kitchen_id, sku_id), PredictionError())

    def total_error(self) -> PredictionError:
        """Prediction error over every series (for the metrics endpoint)."""
        total = PredictionError()
        for key in sorted(self.errors):
            e = self.errors[key]
            total = PredictionError(
                total.count + e.count,
                total.abs_error_sum_s + e.abs_error_sum_s,
                total.error_sum_s + e.error_sum_s,
                total.within_p90 + e.within_p90,
            )
        return total


def observe(
    model: PrepTimeModel,
    now: float,
    observation: PrepObservation,
    *,
    nominal_s: float | None = None,
) -> PrepTimeModel:
    """The model after learning one completed task (scored first against the current estimate
    when there was one, or against ``nominal_s`` when given)."""
    done_at = min(observation.done_at, now)
    duration = observation.duration_s
    key = (observation.kitchen_id, observation.sku_id)
    errors = model.errors
    own = model.by_kitchen_sku.get(key)
    shared = model.by_sku.get(observation.sku_id)
    if (own and own.estimate) or (shared and shared.estimate) or nominal_s is not None:
        predicted = model.estimate(*key, nominal_s=nominal_s or duration)
        errors = {**errors, key: model.error_of(*key).scored(predicted, duration)}
    settings = model.settings
    return PrepTimeModel(
        settings,
        {**model.by_kitchen_sku, key: _learn(own or PrepSeries(), done_at, duration, settings)},
        {
            **model.by_sku,
            observation.sku_id: _learn(shared or PrepSeries(), done_at, duration, settings),
        },
        errors,
    )


def _learn(series: PrepSeries, done_at: float, duration: float, s: PrepSettings) -> PrepSeries:
    kept = list(series.completions)
    bisect.insort(kept, (done_at, duration))
    stale = series.stale_dropped
    if len(kept) > s.window:
        # The oldest completion goes, whichever arrived last: late reports of old work drop out.
        del kept[: len(kept) - s.window]
        stale += 1
    estimate, outliers = _quantiles(kept, s)
    return PrepSeries(tuple(kept), estimate, outliers, stale)


def _quantiles(
    completions: list[tuple[float, float]], s: PrepSettings
) -> tuple[PrepEstimate | None, int]:
    if len(completions) < s.min_samples:
        return None, 0
    newest = completions[-1][0]
    weighted = sorted(
        (duration, 0.5 ** ((newest - done_at) / s.half_life_s)) for done_at, duration in completions
    )
    median = _weighted_quantile(weighted, 0.5)
    low, high = median / s.outlier_factor, median * s.outlier_factor
    inliers = [(d, w) for d, w in weighted if low <= d <= high]
    estimate = PrepEstimate(
        _weighted_quantile(inliers, 0.5),
        _weighted_quantile(inliers, 0.9),
        "kitchen_sku",
        len(inliers),
    )
    return estimate, len(weighted) - len(inliers)


def _weighted_quantile(sorted_weighted: list[tuple[float, float]], q: float) -> float:
    total = sum(w for _, w in sorted_weighted)
    target = q * total
    running = 0.0
    for value, weight in sorted_weighted:
        running += weight
        if running >= target - 1e-12 * total:
            return value
    return sorted_weighted[-1][0]
