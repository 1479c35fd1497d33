"""The control loop's conclusions as a file beside the store, for every server process on it.

The control loop runs in a process of its own (:mod:`control_plane.loop_process`), so its tick
(SLA prediction over every open order, backpressure, re-planning: a few hundred milliseconds of
Python at 10,000 open orders) never holds the request path's interpreter lock. After each
tick it writes what the request path reads to ``<db>.planning`` (:func:`write`): the
backpressure decisions, the SLA predictions, the learned prep-time model and the loop's own
Prometheus metrics. Every server process on the store follows that one file
(:class:`PlanningFollower`), so a process standing by behind another's control loop sheds,
plans and predicts with the same conclusions as the leader's.

The file is derived data, rewritten every tick: written to a temporary name and renamed over
the old one (a reader sees the old file or the new one, never half of one), not fsync'd (after
a power loss the next tick rewrites it). A file that cannot be read (torn by a crash, written
by another version) is skipped, counted and logged; the last good conclusions stay in force.

It is read with a restricted unpickler (:class:`_Unpickler`): plain values and the prep-time
model's own classes only, so a planted file cannot run code in the server.

>>> state = PlanningState()
>>> write(Path("/tmp/cp.db.planning"), state, metrics=b"", at=0.0)      # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.planning.backpressure import Actions, Decision
from control_plane.planning.prep_times import (
    PredictionError,
    PrepEstimate,
    PrepSeries,
    PrepSettings,
    PrepTimeModel,
)
from control_plane.planning_state import PlanningState

__all__ = [
    "SUFFIX",
    "PlanningFollower",
    "Snapshot",
    "SnapshotError",
    "path_beside",
    "read",
    "write",
]

log = logging.getLogger("brigade.planning_snapshot")

SUFFIX = ".planning"
#: Bumped when the layout changes: a file of another format is skipped, not misread.
FORMAT = 1

#: ``(scope, level, reject_priorities, promise_delay_s, retry_after_s, accept_new_work, why,
#: changed)``: a :class:`Decision` as plain values.
DecisionRow = tuple[str, str, tuple[str, ...], float, int | None, bool, str, bool]


class SnapshotError(Exception):
    """The snapshot file is missing, torn, or not one this version can read."""


@dataclass(frozen=True)
class Snapshot:
    """One published tick; ``prep`` is unpickled only on demand (:meth:`prep_model`)."""

    at: float
    pid: int
    prep_version: int
    decisions: tuple[DecisionRow, ...]
    predictions: Mapping[str, tuple[Any, ...]]
    prep_blob: bytes
    metrics: bytes
    #: How often the loop rang each kitchen's work doorbell since its process started.
    rings: Mapping[str, int]

    def prep_model(self) -> PrepTimeModel:
        model = _loads(self.prep_blob)
        if not isinstance(model, PrepTimeModel):
            raise SnapshotError("the prep-time model in the snapshot is not one")
        return model


def path_beside(db_path: Path) -> Path:
    """The snapshot file of the store at ``db_path``."""
    return db_path.with_name(db_path.name + SUFFIX)


def write(
    path: Path,
    planning: PlanningState,
    *,
    metrics: bytes,
    at: float,
    prep_version: int = 0,
    rings: Mapping[str, int] | None = None,
    pid: int | None = None,
) -> None:
    """Publish what ``planning`` holds now (atomically: temporary file, then rename).

    ``prep_version`` tells readers whether the model changed since they last loaded it (the
    control loop passes its completion cursor), so they skip unpickling an unchanged one.
    ``rings``: how often the loop rang each kitchen's doorbell (re-planning moved work), for
    the servers to ring theirs; counted since the process ``pid`` (default: this one) started."""
    payload = {
        "format": FORMAT,
        "at": at,
        "pid": os.getpid() if pid is None else pid,
        "prep_version": prep_version,
        "decisions": tuple(_decision_row(d) for d in planning.decisions().values()),
        "predictions": dict(planning.prediction_rows()),
        "prep": pickle.dumps(planning.prep_model(), protocol=pickle.HIGHEST_PROTOCOL),
        "metrics": metrics,
        "rings": dict(rings or {}),
    }
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: Path) -> Snapshot:
    """The snapshot at ``path``; :class:`SnapshotError` if there is none or it is unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SnapshotError(f"no snapshot at {path} yet") from exc
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from exc
    payload = _loads(data)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a format-{FORMAT} planning snapshot")
    try:
        return Snapshot(
            at=float(payload["at"]),
            pid=int(payload["pid"]),
            prep_version=int(payload["prep_version"]),
            decisions=tuple(payload["decisions"]),
            predictions=payload["predictions"],
            prep_blob=bytes(payload["prep"]),
            metrics=bytes(payload["metrics"]),
            rings={str(k): int(n) for k, n in dict(payload["rings"]).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{path} lacks {exc}") from exc


def _decision_row(d: Decision) -> DecisionRow:
    a = d.actions
    return (
        d.scope,
        d.level,
        tuple(sorted(a.reject_priorities)),
        a.promise_delay_s,
        a.retry_after_s,
        a.accept_new_work,
        d.why,
        d.changed,
    )


def _decision(row: DecisionRow) -> Decision:
    scope, level, reject, delay, retry_after, accept, why, changed = row
    return Decision(
        scope, level, Actions(frozenset(reject), delay, retry_after, accept), why, changed
    )


#: The only classes a snapshot may name (everything else in it is a builtin value).
_ALLOWED = {
    (cls.__module__, cls.__name__): cls
    for cls in (PrepTimeModel, PrepSeries, PrepEstimate, PredictionError, PrepSettings)
}
_ALLOWED_BUILTINS = {("builtins", "frozenset"): frozenset, ("builtins", "set"): set}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name)) or _ALLOWED_BUILTINS.get((module, name))
        if found is None:
            raise SnapshotError(f"a planning snapshot may not name {module}.{name}")
        return found


def _loads(data: bytes) -> Any:
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except SnapshotError:
        raise
    except Exception as exc:  # a torn or foreign file fails in many ways
        raise SnapshotError(f"unreadable planning snapshot: {exc!r}") from exc


class PlanningFollower:
    """Keeps a process's :class:`PlanningState` equal to the snapshot file, on a thread.

    Every ``interval_s`` it looks at the file's identity (inode, size, modification time) and
    loads it when that changed; kitchens whose doorbell the loop rang are passed to
    ``on_rings``. ``metrics`` (the control loop's own exposition) is the text the
    latest snapshot carried, for the process's ``/metrics``."""

    def __init__(
        self,
        path: Path,
        planning: PlanningState,
        *,
        interval_s: float = 0.25,
        on_error: Callable[[], None] | None = None,
        on_rings: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.path = path
        self._planning = planning
        self._interval_s = interval_s
        self._on_error = on_error
        self._on_rings = on_rings
        self._rings: tuple[int, Mapping[str, int]] | None = None
        self._seen: tuple[int, int, int] | None = None
        self._prep_version: int | None = None
        #: The rows of the decisions in force, to tell which ones a new snapshot changed.
        self._decision_rows: dict[str, DecisionRow] = {}
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The control loop's metrics exposition from the latest snapshot.
        self.metrics = b""
        #: When the control loop wrote the snapshot in force (None: none loaded yet).
        self.published_at: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="planning-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._interval_s)

    def poll(self) -> bool:
        """Load the file if it changed since the last look; whether a new snapshot is in force."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # the control loop has not written one yet
        except OSError as exc:
            self._failed(f"cannot stat {self.path}: {exc}")
            return False
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._seen:
            return False
        try:
            snapshot = read(self.path)
            self.load(snapshot)
        except SnapshotError as exc:
            self._seen = identity  # not retried until it changes again
            self._failed(str(exc))
            return False
        self._seen = identity
        if self._failing:
            log.warning("planning snapshot %s readable again", self.path)
            self._failing = False
        return True

    def load(self, snapshot: Snapshot) -> None:
        """Put ``snapshot`` in force (decisions, predictions, and the model if it changed)."""
        if snapshot.prep_version != self._prep_version:
            self._planning.publish_prep_model(snapshot.prep_model())
            self._prep_version = snapshot.prep_version
        previous = self._planning.decisions()
        decisions: dict[str, Decision] = {}
        rows: dict[str, DecisionRow] = {}
        for row in snapshot.decisions:
            scope = row[0]
            published = previous.get(scope)
            # An unchanged decision keeps its object (cheaper, and frees the new one at once).
            same = published is not None and self._decision_rows.get(scope) == row
            decisions[scope] = published if same and published is not None else _decision(row)
            rows[scope] = row
        self._decision_rows = rows
        self._planning.publish_decisions(decisions)
        self._planning.publish_prediction_rows(snapshot.predictions)
        self.metrics = snapshot.metrics
        self.published_at = snapshot.at
        self._pass_rings(snapshot)

    def _pass_rings(self, snapshot: Snapshot) -> None:
        """Ring here what the loop rang since the last snapshot seen (every kitchen it rang at
        all, from a process not seen before: its counts start at its start)."""
        seen = self._rings[1] if self._rings and self._rings[0] == snapshot.pid else {}
        rung = {k for k, n in snapshot.rings.items() if n != seen.get(k, 0)}
        self._rings = (snapshot.pid, snapshot.rings)
        if rung and self._on_rings is not None:
            self._on_rings(rung)

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the snapshot in force was written (NaN: none loaded yet)."""
        if self.published_at is None:
            return float("nan")
        return max((time.time() if now is None else now) - self.published_at, 0.0)

    def _failed(self, why: str) -> None:
        if self._on_error is not None:
            self._on_error()
        if not self._failing:
            log.warning("planning snapshot skipped (last good one stays in force): %s", why)
            self._failing = True
