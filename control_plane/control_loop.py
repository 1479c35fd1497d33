"""The control loop: a thin shell that runs the planning cores on a schedule and publishes.

Every ``control_interval_s`` (and at once when woken), :meth:`ControlLoop.tick`:

1. reads what it needs in **one read transaction** (:func:`~control_plane.loop_inputs.read_inputs`);
2. computes outside any lock, with the pure cores in :mod:`control_plane.planning`: the
   prep-time model learns the completions audited since its cursor (``prep_times.observe``);
   every open order is predicted and alerts raised or cleared (``sla``); every kitchen's and
   the fleet's backpressure level advances, operators' overrides applied (``backpressure``);
   affected kitchens' queued work is re-planned (:mod:`control_plane.replanning`) as soon as
   what it depends on changes, and every ``replan_interval_s`` to retry what found no place;
3. writes **only what changed** in one write transaction: SLA alerts and their audit records,
   level changes and theirs, re-planned and flagged tasks and theirs;
4. publishes the model, predictions and decisions to
   :class:`~control_plane.planning_state.PlanningState` for the request path, and updates the
   metrics.

The in-memory states (SLA alerts raised, backpressure levels, the completion cursor) advance
only once the write committed, so a failed tick is simply done again. After a restart the
model is rebuilt from every audited completion, and raised alerts and levels are restored
from the store. Of several processes on one store, only the one holding its control-loop lock
(:mod:`control_plane.loop_lock`) runs ticks; the others stand by, so alerts are not doubled.

>>> loop = ControlLoop(store=store, settings=settings, metrics=Metrics(),   # doctest: +SKIP
...                    planning=PlanningState(), clock=time.time)
>>> loop.tick().sla_raised                                                 # doctest: +SKIP
0
"""

from __future__ import annotations

import gc
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from control_plane import audit
from control_plane.alerts import CONTROL_PLANE_SOURCE
from control_plane.config import Settings
from control_plane.loop_inputs import (
    LoopInputs,
    open_sla_alerts,
    read_inputs,
)
from control_plane.loop_lock import LoopLock
from control_plane.metrics import Metrics
from control_plane.planning.backpressure import (
    GLOBAL,
    LEVELS,
    THRESHOLDS,
    BackpressureSettings,
    BackpressureState,
    Decision,
    Override,
    ScopeState,
    Signals,
    fleet_signals,
    kitchen_signals,
    step,
)
from control_plane.planning.prep_times import PrepObservation, PrepTimeModel, observe
from control_plane.planning.replan import ReplanSettings, lost_contact
from control_plane.planning.sla import (
    ActiveAlert,
    OpenOrder,
    Prediction,
    QueuedTask,
    SlaEvent,
    SlaSettings,
    SlaState,
    evaluate,
    predict,
)
from control_plane.planning.sla import at_risk as at_risk_of
from control_plane.planning.world import KitchenSpec, World
from control_plane.planning_state import PlanningState
from control_plane.queries import Reader
from control_plane.replanning import AppliedReplan, ReplanPlan, apply_replan, plan_replan
from control_plane.replanning import trigger as replan_trigger
from control_plane.store import Store, Writer

__all__ = ["ControlLoop", "TickReport"]

log = logging.getLogger("brigade.control_loop")


@dataclass(frozen=True)
class TickReport:
    """What one tick did (for tests and the log)."""

    at: float
    completions_learned: int = 0
    sla_raised: int = 0
    sla_cleared: int = 0
    level_changes: tuple[tuple[str, str], ...] = ()
    replanned: tuple[str, ...] = ()
    replan_skipped: tuple[str, ...] = ()
    flagged: tuple[tuple[str, str], ...] = ()
    replan_ran: bool = False
    wrote: bool = False


@dataclass
class _Memory:
    """What the loop carries from one tick to the next."""

    prep: PrepTimeModel = field(default_factory=PrepTimeModel)
    cursor: int = 0
    sla: SlaState = field(default_factory=SlaState)
    alert_ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    backpressure: BackpressureState = field(default_factory=BackpressureState)
    open_kitchens: dict[str, bool] = field(default_factory=dict)
    replan_key: Hashable = None
    replanned_at: float = -math.inf
    restored: bool = False


class ControlLoop:
    """The control plane's periodic brain; :meth:`tick` is callable directly (tests)."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        planning: PlanningState,
        clock: Callable[[], float],
        lock: LoopLock | None = None,
        after_tick: Callable[[], None] | None = None,
    ) -> None:
        """``after_tick`` runs on the loop's thread after each tick that completed (the
        control-loop process publishes its snapshot there)."""
        self._store = store
        self._after_tick = after_tick
        self._lock = lock if lock is not None else LoopLock.beside(store.path)
        self._settings = settings
        self._metrics = metrics
        self._planning = planning
        self._clock = clock
        self._memory = _Memory()
        #: The level each scope's gauge shows (set only when it changes).
        self._published_levels: dict[str, str] = {}
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sla_settings = SlaSettings(
            unreachable_after_s=settings.agent_unreachable_after_s,
            clear_margin_s=settings.sla_clear_margin_s,
        )
        self._replan_settings = ReplanSettings(
            unreachable_after_s=settings.agent_unreachable_after_s
        )
        self._bp_settings = BackpressureSettings(min_dwell_s=settings.backpressure_min_dwell_s)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run ticks on a thread of their own (named ``control-loop``) until :meth:`stop`, while
        this process holds the store's control-loop lock (:mod:`control_plane.loop_lock`);
        otherwise stand by and try to take it every interval."""
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after its current tick."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wake(self) -> None:
        """Tick as soon as possible (e.g. after an operator's override)."""
        self._wake.set()

    @property
    def prep_version(self) -> int:
        """Changes whenever the learned prep-time model may have (its completion cursor)."""
        return self._memory.cursor

    def lead(self) -> bool:
        """Take the store's control-loop lock if no other process holds it; whether this loop
        runs (:meth:`tick` itself does not check: tests and tools call it directly)."""
        return self._lock.try_acquire()

    def _run(self) -> None:
        standing_by = False
        try:
            while not self._stop.is_set():
                try:
                    if self.lead():
                        if standing_by:
                            log.warning("took over the control loop of %s", self._store.path)
                        standing_by = False
                        self.tick()
                        self._published()
                    elif not standing_by:
                        standing_by = True
                        log.warning(
                            "another process runs the control loop of %s (lock %s held);"
                            " standing by",
                            self._store.path,
                            self._lock.path,
                        )
                except Exception:  # one bad tick must not stop the loop
                    self._metrics.control_loop_errors.inc()
                    log.exception("control loop tick failed; retrying next interval")
                self._wake.wait(self._settings.control_interval_s)
                self._wake.clear()
        finally:
            self._lock.release()

    def _published(self) -> None:
        if self._after_tick is None:
            return
        try:
            self._after_tick()
        except Exception:  # the tick's writes are committed; the next tick publishes again
            self._metrics.control_loop_errors.inc()
            log.exception("publishing the control loop's tick failed; retrying next interval")

    # -- one tick ----------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Read, decide, write what changed, publish (see the module docstring)."""
        with self._tick_lock, _cyclic_gc_paused() as gc_pause:
            started = time.perf_counter()
            report = self._tick(gc_pause)
            self._metrics.control_loop_seconds.observe(time.perf_counter() - started)
            return report

    def _tick(self, gc_pause: _GcPause) -> TickReport:
        memory = self._memory
        now = self._clock()
        with self._store.read() as reader:
            inputs = read_inputs(reader, now=now, after_audit_seq=memory.cursor)
            restored = None if memory.restored else _restore(reader)
        sla_state, alert_ids, bp_state = memory.sla, memory.alert_ids, memory.backpressure
        if restored is not None:
            sla_state, alert_ids, bp_state = restored

        prep, cursor, errors = _learn(memory.prep, memory.cursor, inputs)
        predictions, orders_promised = self._predict(inputs, prep)
        sla_state, sla_events = evaluate(
            sla_state, now, predictions, orders_promised, self._sla_settings
        )
        open_now = {k.kitchen_id: self._is_open(k, now) for k in inputs.kitchens}
        signals = self._signals(inputs, predictions, prep, open_now)
        before = bp_state.scopes
        reopened = _reopened(memory.open_kitchens, open_now)
        bp_state = BackpressureState(
            {**bp_state.scopes, **{k: ScopeState(0, now) for k in reopened if k in before}}
        )
        bp_state, decisions = _step_levels(
            bp_state, now, signals, inputs.overrides, self._bp_settings
        )
        for kitchen_id in sorted(reopened & decisions.keys()):
            decision = decisions[kitchen_id]
            if LEVELS[before.get(kitchen_id, ScopeState()).level] != decision.level:
                decisions[kitchen_id] = replace(
                    decision, changed=True, why=f"kitchen reopened; {decision.why}"
                )
        replan_key = replan_trigger(inputs, self._replan_settings)
        replan_due = (
            replan_key != memory.replan_key
            or now - memory.replanned_at >= self._settings.replan_interval_s
        )
        replan_plan = plan_replan(inputs, prep, self._replan_settings) if replan_due else None

        changes = [d for d in decisions.values() if d.changed]
        applied: AppliedReplan | None = None
        replan_writes = replan_due and (
            _replan_writes(inputs, replan_plan) if replan_plan else bool(inputs.flagged)
        )
        must_write = bool(sla_events or changes or replan_writes)
        if must_write:
            # The collector runs while writing: the write lock may be waited on for long.
            with gc_pause.lifted(), self._store.write() as tx:
                alert_ids = self._write_sla(tx, inputs, sla_events, alert_ids, predictions)
                _write_levels(tx, changes, signals, before, now=now)
                if replan_writes:
                    applied = apply_replan(tx, inputs, replan_plan, now=now)

        # Committed (or nothing to commit): the loop's memory moves on.
        self._memory = _Memory(
            prep,
            cursor,
            sla_state,
            alert_ids,
            bp_state,
            open_now,
            # A move skipped (its task or its slot changed since the read) is retried next tick.
            replan_key=None
            if applied and applied.skipped
            else (replan_key if replan_due else memory.replan_key),
            replanned_at=now if replan_due else memory.replanned_at,
            restored=True,
        )
        self._planning.publish_prep_model(prep)
        self._planning.publish_predictions(predictions)
        self._planning.publish_decisions(_reuse_unchanged(self._planning.decisions(), decisions))
        self._observe(errors, sla_events, changes, decisions, prep, applied)
        return TickReport(
            at=now,
            completions_learned=len(errors),
            sla_raised=sum(e.kind == "raised" for e in sla_events),
            sla_cleared=sum(e.kind != "raised" for e in sla_events),
            level_changes=tuple((d.scope, d.level) for d in changes),
            replanned=tuple(m.task_id for m in applied.moved) if applied else (),
            replan_skipped=applied.skipped if applied else (),
            flagged=applied.flagged if applied else (),
            replan_ran=replan_due,
            wrote=must_write,
        )

    def _predict(
        self, inputs: LoopInputs, prep: PrepTimeModel
    ) -> tuple[dict[str, Prediction], dict[str, float]]:
        tasks_of: dict[str, list[str]] = {}
        freshness: dict[str, float] = {}
        for task in inputs.tasks:
            sku = inputs.skus.get(task.sku_id)
            for order_id in task.order_ids:
                tasks_of.setdefault(order_id, []).append(task.task_id)
                if sku is not None:
                    window = sku.freshness_window_min
                    freshness[order_id] = min(freshness.get(order_id, window), window)
        orders = [
            OpenOrder(
                o.order_id,
                o.promised_by,
                o.transport_min,
                freshness.get(o.order_id, float("inf")),
                tuple(sorted(tasks_of.get(o.order_id, ()))),
            )
            for o in inputs.orders
        ]
        queued = [
            QueuedTask(
                t.task_id,
                t.kitchen_id,
                t.station_id,
                t.sku_id,
                t.state,
                t.start_after,
                t.started_at,
            )
            for t in inputs.tasks
        ]
        # The SLA core reads "never synced" as unreachable (cause ``stranded``); a kitchen
        # whose agent never synced is not partitioned, so, as for re-planning, it is not lost.
        kitchens = tuple(
            k if k.last_sync_at is not None else replace(k, last_sync_at=inputs.now)
            for k in inputs.kitchens
        )
        world = World(kitchens, inputs.skus, prep=prep)
        predictions = predict(inputs.now, orders, queued, world, self._sla_settings)
        return predictions, {o.order_id: o.promised_by for o in inputs.orders}

    def _signals(
        self,
        inputs: LoopInputs,
        predictions: Mapping[str, Prediction],
        prep: PrepTimeModel,
        open_now: Mapping[str, bool],
    ) -> dict[str, Signals]:
        """Each kitchen's signals and the fleet's; ``open_now``: :meth:`_is_open` of each."""
        work = _work_within(inputs, prep, self._settings.backpressure_horizon_s)
        open_orders: dict[str, int] = {}
        at_risk: dict[str, int] = {}
        for order in inputs.orders:
            if order.kitchen_id is None:
                continue
            open_orders[order.kitchen_id] = open_orders.get(order.kitchen_id, 0) + 1
            prediction = predictions.get(order.order_id)
            if prediction is not None and at_risk_of(prediction, self._sla_settings):
                at_risk[order.kitchen_id] = at_risk.get(order.kitchen_id, 0) + 1
        signals: dict[str, Signals] = {}
        for stored in inputs.kitchens:
            kitchen = stored
            # An agent gone quiet: the kitchen takes nothing new, whatever its stored status.
            if stored.status == "active" and lost_contact(
                stored, inputs.now, self._replan_settings
            ):
                kitchen = replace(stored, status="offline")
            signals[kitchen.kitchen_id] = kitchen_signals(
                kitchen,
                open_work_s=work.get(kitchen.kitchen_id, 0.0),
                open_orders=open_orders.get(kitchen.kitchen_id, 0),
                orders_at_risk=at_risk.get(kitchen.kitchen_id, 0),
                ingestion_lag_s=inputs.ingestion_lag_s.get(kitchen.kitchen_id, 0.0),
                horizon_s=self._settings.backpressure_horizon_s,
            )
        # Kitchens an operator paused or took offline are not part of the serving fleet: intake
        # already sends them nothing, and their absence must not make the rest look overloaded.
        # Nor is a closed kitchen with nothing to do (its equipment not reported in yet). A
        # kitchen that went quiet unannounced with work still open is, with no capacity.
        serving = {
            k.kitchen_id: signals[k.kitchen_id]
            for k in inputs.kitchens
            if k.status == "active" and (open_now[k.kitchen_id] or work.get(k.kitchen_id, 0.0) > 0)
        }
        signals[GLOBAL] = (
            fleet_signals(serving)
            if serving
            else Signals(horizon_s=self._settings.backpressure_horizon_s)
        )
        return signals

    def _is_open(self, kitchen: KitchenSpec, now: float) -> bool:
        """Whether the kitchen can take work at all: active, in contact, some capacity left."""
        return (
            kitchen.status == "active"
            and not lost_contact(kitchen, now, self._replan_settings)
            and any(kitchen.effective_slots(s.station_id) > 0 for s in kitchen.stations)
        )

    # -- writes ------------------------------------------------------------------------------

    def _write_sla(
        self,
        tx: Writer,
        inputs: LoopInputs,
        events: list[SlaEvent],
        alert_ids: dict[str, tuple[str, str]],
        predictions: Mapping[str, Prediction],
    ) -> dict[str, tuple[str, str]]:
        kitchens = {o.order_id: o.kitchen_id for o in inputs.orders}
        ids = dict(alert_ids)
        for event in events:
            if event.kind == "raised":
                alert_id = f"sla-{event.order_id}-{int(event.at * 1000)}"
                ids[event.order_id] = (CONTROL_PLANE_SOURCE, alert_id)
                tx.insert_sla_alert(
                    agent_id=CONTROL_PLANE_SOURCE,
                    alert_id=alert_id,
                    kitchen_id=kitchens.get(event.order_id) or "",
                    order_id=event.order_id,
                    cause=event.cause,
                    message=event.message,
                    lead_s=_finite(event.lead_s),
                    margin_s=_finite(event.margin_s),
                    raised_at=event.at,
                )
                action = "order.sla_at_risk"
            else:
                agent_id, alert_id = ids.pop(event.order_id, (CONTROL_PLANE_SOURCE, ""))
                tx.resolve_alert(
                    agent_id=agent_id, alert_id=alert_id, resolution=event.message, at=event.at
                )
                action = "order.sla_recovered" if event.kind == "cleared" else "order.sla_closed"
            prediction = predictions.get(event.order_id)
            audit.append(
                tx,
                at=event.at,
                actor_type="system",
                actor_id="sla",
                action=action,
                subject_type="order",
                subject_id=event.order_id,
                order_id=event.order_id,
                kitchen_id=kitchens.get(event.order_id),
                reason=event.cause,
                details={
                    "message": event.message,
                    "alert_id": alert_id,
                    "lead_s": _finite(event.lead_s),
                    "margin_s": _finite(event.margin_s),
                    "miss_probability": None
                    if prediction is None
                    else _finite(prediction.miss_probability),
                    "predicted_ready_p90": None
                    if prediction is None
                    else _finite(prediction.ready_p90),
                },
            )
        return ids

    # -- metrics -----------------------------------------------------------------------------

    def _observe(
        self,
        errors: list[float],
        sla_events: list[SlaEvent],
        changes: list[Decision],
        decisions: Mapping[str, Decision],
        prep: PrepTimeModel,
        applied: AppliedReplan | None,
    ) -> None:
        m = self._metrics
        for error in errors:
            m.prep_abs_error_seconds.observe(abs(error))
        total = prep.total_error()
        m.prep_mean_abs_error_seconds.set(total.mean_abs_error_s)
        m.prep_bias_seconds.set(total.bias_s)
        m.prep_p90_coverage.set(total.p90_coverage)
        for event in sla_events:
            if event.kind == "raised":
                m.sla_alerts_raised.labels(cause=event.cause).inc()
                m.sla_alert_lead_seconds.observe(max(event.lead_s, 0.0))
            else:
                m.sla_alerts_cleared.labels(how=event.kind).inc()
        for decision in changes:
            m.backpressure_changes.labels(scope=decision.scope, level=decision.level).inc()
        # Only the gauges whose level moved: a fleet has thousands of scopes, and looking up
        # each one's labelled child every tick costs the request path its GIL.
        for scope, decision in decisions.items():
            if self._published_levels.get(scope) != decision.level:
                m.backpressure_level.labels(scope=scope).set(LEVELS.index(decision.level))
                self._published_levels[scope] = decision.level
        if applied is not None:
            for move in applied.moved:
                m.tasks_replanned.labels(reason=move.reason).inc()
            for _, reason in applied.flagged:
                m.tasks_flagged.labels(reason=reason).inc()


def _write_levels(
    tx: Writer,
    changes: list[Decision],
    signals: Mapping[str, Signals],
    previous: Mapping[str, ScopeState],
    *,
    now: float,
) -> None:
    """Store each changed scope's level and audit the change with its signals."""
    for decision in changes:
        before = LEVELS[previous.get(decision.scope, ScopeState()).level]
        tx.set_backpressure_level(
            scope=decision.scope, level=decision.level, since=now, why=decision.why
        )
        s = signals[decision.scope]
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="backpressure",
            action="backpressure.level_changed",
            subject_type="backpressure",
            subject_id=decision.scope,
            kitchen_id=None if decision.scope == GLOBAL else decision.scope,
            reason=decision.why,
            details={
                "from": before,
                "to": decision.level,
                "load": _finite(s.load),
                "queue_work_s": _finite(s.queue_work_s),
                "capacity_s": _finite(s.capacity_s),
                "at_risk_fraction": _finite(s.at_risk_fraction),
                "capacity_lost_fraction": _finite(s.capacity_lost_fraction),
                "ingestion_lag_s": _finite(s.ingestion_lag_s),
            },
        )


def _step_levels(
    state: BackpressureState,
    now: float,
    signals: Mapping[str, Signals],
    overrides: Mapping[str, Override],
    settings: BackpressureSettings,
) -> tuple[BackpressureState, dict[str, Decision]]:
    """What :func:`step` returns for every scope of ``signals``, the core run only on scopes
    that could be anything but normal: most of a large fleet is at ``normal`` with every
    signal below its lowest enter threshold (:func:`_quiet`) and no override, and for those
    the core's decision is the same constant, taken from the core itself once per tick."""
    quiet = {
        scope
        for scope, scope_signals in signals.items()
        if scope not in overrides
        and state.scopes.get(scope, _AT_NORMAL).level == 0
        and _quiet(scope_signals)
    }
    if not quiet:
        return step(state, now, signals, overrides, settings)
    busy = {scope: s for scope, s in signals.items() if scope not in quiet}
    stepped, decided = step(state, now, busy, overrides, settings)
    normal = step(BackpressureState(), now, {GLOBAL: Signals()}, None, settings)[1][GLOBAL]
    scopes = dict(stepped.scopes)
    decisions: dict[str, Decision] = {}
    for scope in sorted(signals):
        if scope in quiet:
            scopes.setdefault(scope, _AT_NORMAL)  # as the core keeps (or starts) it
            decisions[scope] = Decision(scope, normal.level, normal.actions, normal.why, False)
        else:
            decisions[scope] = decided[scope]
    return BackpressureState(scopes), decisions


#: A scope the controller has not seen yet (the core's default).
_AT_NORMAL = ScopeState()


def _quiet(signals: Signals) -> bool:
    """Whether every signal is below the lowest level's enter threshold: from ``normal``,
    the core's target is ``normal`` (its thresholds rise with the level)."""
    return all(map(operator.lt, _SIGNAL_VALUES(signals), _LOWEST_ENTER))


#: Each signal :data:`THRESHOLDS` reads, and the enter threshold of its lowest level.
_SIGNAL_VALUES = operator.attrgetter(*(t.signal for t in THRESHOLDS))
_LOWEST_ENTER = tuple(t.enter[0] for t in THRESHOLDS)


def _reopened(before: Mapping[str, bool], now: Mapping[str, bool]) -> set[str]:
    """Kitchens open again after being closed (paused or offline by an operator, unreachable,
    or without any working equipment): their level starts afresh. The dwell time guards
    against noisy load, not against a kitchen that could take no work at all opening again."""
    return {k for k, is_open in now.items() if is_open and not before.get(k, True)}


def _work_within(inputs: LoopInputs, prep: PrepTimeModel, horizon_s: float) -> dict[str, float]:
    """Seconds of work (learned p50) each kitchen has to do within the horizon: every task
    cooking (what is left of it) and every task due to start before the horizon ends. Work
    planned for later does not load the kitchen now (just-in-time plans start late)."""
    until = inputs.now + horizon_s
    work: dict[str, float] = {}
    for task in inputs.tasks:
        if task.started_at is None and task.start_after >= until:
            continue
        sku = inputs.skus.get(task.sku_id)
        nominal = sku.duration_s if sku else task.duration_s
        p50 = prep.estimate(task.kitchen_id, task.sku_id, nominal_s=nominal).p50_s
        if task.started_at is not None:
            p50 = max(p50 - max(inputs.now - task.started_at, 0.0), 0.0)
        work[task.kitchen_id] = work.get(task.kitchen_id, 0.0) + p50
    return work


class _GcPause:
    """The cyclic collector held off by :func:`_cyclic_gc_paused` (``active``), and a way to
    let it run again around a wait (:meth:`lifted`)."""

    def __init__(self, *, active: bool) -> None:
        self.active = active

    @contextmanager
    def lifted(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        gc.enable()
        try:
            yield
        finally:
            gc.disable()


@contextmanager
def _cyclic_gc_paused() -> Iterator[_GcPause]:
    """Hold off the cyclic garbage collector while a tick runs (its objects are freed by
    reference counting when it ends).

    A tick over thousands of kitchens allocates ~10^5 objects. The request threads' own
    allocations trigger young collections all through it, and each one moves the tick's
    objects alive at that moment into the oldest generation, whose growth then triggers full
    collections: stop-the-world pauses of 50-100 ms in every thread, a fleet's p99 sync
    latency. The previous state is restored (a process that runs without the collector keeps
    doing so)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield _GcPause(active=was_enabled)
    finally:
        if was_enabled:
            gc.enable()


def _reuse_unchanged(
    previous: Mapping[str, Decision], decisions: dict[str, Decision]
) -> dict[str, Decision]:
    """``decisions``, with each one equal to the published one replaced by that object: the
    new one is freed at once instead of living until the next tick, so a steady fleet's
    decisions do not refill the collector's oldest generation every tick."""
    for scope, decision in decisions.items():
        published = previous.get(scope)
        if published is not None and published == decision:
            decisions[scope] = published
    return decisions


def _finite(value: float) -> float | None:
    """A number for JSON (audit details, API answers): rounded, ``None`` when not finite
    (an order on a kitchen without capacity is predicted ready "never")."""
    return round(value, 4) if math.isfinite(value) else None


def _restore(reader: Reader) -> tuple[SlaState, dict[str, tuple[str, str]], BackpressureState]:
    """The SLA alerts still raised and each scope's level, as stored before a restart."""
    alerts = open_sla_alerts(reader)
    sla = SlaState({a.order_id: ActiveAlert(a.raised_at, a.lead_s, a.cause) for a in alerts})
    ids = {a.order_id: (a.agent_id, a.alert_id) for a in alerts}
    scopes = {
        str(row["scope"]): ScopeState(LEVELS.index(str(row["level"])), float(row["since"]))
        for row in reader.backpressure_levels()
    }
    return sla, ids, BackpressureState(scopes)


def _learn(
    model: PrepTimeModel, cursor: int, inputs: LoopInputs
) -> tuple[PrepTimeModel, int, list[float]]:
    """Observe each completion audited after ``cursor`` once; returns the model, the new
    cursor and each observation's error (actual - predicted p50)."""
    errors: list[float] = []
    # Learned in the order they happened, so the error of each is scored against what the
    # model knew before it (at startup, the whole history arrives at once).
    ordered = sorted(inputs.completions, key=lambda c: (c.finished_at or 0.0, c.audit_seq))
    for completion in ordered:
        cursor = max(cursor, completion.audit_seq)
        if completion.started_at is None or completion.finished_at is None:
            continue  # reported done without a start: no duration to learn
        sku = inputs.skus.get(completion.sku_id)
        nominal = sku.duration_s if sku else None
        observation = PrepObservation(
            completion.kitchen_id, completion.sku_id, completion.started_at, completion.finished_at
        )
        before = model.estimate(
            completion.kitchen_id, completion.sku_id, nominal_s=nominal or observation.duration_s
        )
        errors.append(observation.duration_s - before.p50_s)
        model = observe(model, inputs.now, observation, nominal_s=nominal)
    return model, cursor, errors


def _replan_writes(inputs: LoopInputs, plan: ReplanPlan) -> bool:
    if plan.result.moves:
        return True
    current = {t.task_id: t.flag_reason for t in inputs.tasks}
    if any(current.get(task_id) != reason for task_id, reason in plan.flags.items()):
        return True
    return any(task_id not in plan.flags for task_id in inputs.flagged)
