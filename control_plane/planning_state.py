"""What the control loop last concluded, for the request path to read.

The control loop (SLA evaluation, backpressure, prep-time learning, re-planning) runs on its own
schedule and *publishes* its conclusions here; order intake and the order views *read* them. The
request path never computes them itself, so an intake request costs one lock and a dict lookup.

Readers get immutable snapshots (frozen dataclasses, ``MappingProxyType``); writers replace whole
values under the lock, never mutate them in place.

>>> state = PlanningState()
>>> [d.level for d in state.decisions_for(["k1"])]
['normal', 'normal']
>>> state.prediction("ord-1") is None
True
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from control_plane.planning.backpressure import GLOBAL, Actions, Decision
from control_plane.planning.prep_times import PrepTimeModel
from control_plane.planning.sla import Prediction

__all__ = ["PlanningState"]


def _normal(scope: str) -> Decision:
    return Decision(scope, "normal", Actions(), "no evaluation yet", changed=False)


class PlanningState:
    """Latest backpressure decisions, SLA predictions and prep-time model (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decisions: Mapping[str, Decision] = MappingProxyType({})
        #: Each order's prediction as its fields after ``order_id`` (built on lookup: a tick
        #: publishes thousands, a request reads one).
        self._predictions: Mapping[str, tuple[Any, ...]] = MappingProxyType({})
        self._prep = PrepTimeModel()

    # -- read by the request path ------------------------------------------------------------

    def decisions_for(self, kitchen_ids: Iterable[str]) -> list[Decision]:
        """The global decision, then each given kitchen's ("normal" until first evaluated)."""
        with self._lock:
            decisions = self._decisions
        scopes = [GLOBAL, *sorted(set(kitchen_ids))]
        return [decisions.get(scope) or _normal(scope) for scope in scopes]

    def decisions(self) -> Mapping[str, Decision]:
        """Every scope's latest decision, keyed by scope (``GLOBAL`` or a kitchen id)."""
        with self._lock:
            return self._decisions

    def prediction(self, order_id: str) -> Prediction | None:
        """The latest SLA prediction of an open order (None: not evaluated yet, or closed)."""
        with self._lock:
            row = self._predictions.get(order_id)
        return None if row is None else Prediction(order_id, *row)

    def prediction_rows(self) -> Mapping[str, tuple[Any, ...]]:
        """Every prediction as plain values (see :meth:`publish_prediction_rows`)."""
        with self._lock:
            return self._predictions

    def prep_model(self) -> PrepTimeModel:
        """The learned prep-time model planning uses."""
        with self._lock:
            return self._prep

    # -- written by the control loop -----------------------------------------------------------

    def publish_decisions(self, decisions: Mapping[str, Decision]) -> None:
        with self._lock:
            self._decisions = MappingProxyType(dict(decisions))

    def publish_predictions(self, predictions: Mapping[str, Prediction]) -> None:
        rows = {order_id: _row(p) for order_id, p in predictions.items()}
        self.publish_prediction_rows(rows)

    def publish_prediction_rows(self, rows: Mapping[str, tuple[Any, ...]]) -> None:
        """Predictions as :meth:`prediction_rows` gives them (from another process)."""
        with self._lock:
            self._predictions = MappingProxyType(dict(rows))

    def publish_prep_model(self, model: PrepTimeModel) -> None:
        with self._lock:
            self._prep = model

    def with_decisions(self, decisions: Mapping[str, Decision]) -> PlanningState:
        """A copy with ``decisions`` published instead (the prep-time model shared)."""
        copy = PlanningState()
        copy.publish_decisions(decisions)
        copy.publish_prep_model(self.prep_model())
        return copy


def _row(p: Prediction) -> tuple[Any, ...]:
    return (p.ready_p50, p.ready_p90, p.handover_at, p.margin_s, p.miss_probability, p.cause)
