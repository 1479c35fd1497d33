"""Re-planning in the control loop: when a kitchen is paused, taken offline or goes quiet, or
its equipment fails, its tasks that cannot have started move (SPEC guarantee 3).

The decision is :func:`control_plane.planning.replan.replan`'s; this module only gathers its
input from a tick's :class:`~control_plane.loop_inputs.LoopInputs` and applies its result inside
one write transaction:

- only ``planned`` tasks move (the core never moves a leased or started one);
- a move is applied only if the task is still in the state and under the fencing token the
  decision was made on (a compare-and-set): a task the kitchen leased or started meanwhile is
  left alone, and the next tick decides again. The move bumps the fencing token, so nothing
  reported under an older lease can ever apply to it;
- a move is applied only if its destination station, as stored now, still has a free slot over
  the new interval (intake may have booked it since the read); otherwise it is skipped and the
  next tick decides again;
- a move to another kitchen takes the task's stock with it in the same transaction
  (:func:`control_plane.stock.move_reservations`): its reservation is given back at the old
  kitchen and taken at the new one by conditional decrement. The core already skips kitchens
  whose stock (as read) lacks it; if the decrement still finds too little (intake took it
  since the read), the move is rolled back and the task stays, flagged ``no_feasible_kitchen``;
- a task that may have started on an unreachable kitchen is *flagged* ``stranded_unreachable``
  (audited once, never moved: moving it is the operator's reassignment); one with nowhere to go
  is flagged ``no_feasible_kitchen`` (only if it is still as read: a compare-and-set on its
  state and token). Flags clear when the condition does, audited ``task.flag_cleared``.

Kitchens that lost or gained planned work have their work doorbells rung, so their agents sync
at once (:mod:`control_plane.doorbell`).

Only tasks of *affected* kitchens are handed to the core; every other kitchen's open work is
passed as bookings, so it keeps its slots and only capacity left over is offered to moved work.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from control_plane import audit, stock
from control_plane.doorbell import ring_kitchens
from control_plane.loop_inputs import LoopInputs, OpenTask
from control_plane.planning.prep_times import PrepTimeModel
from control_plane.planning.replan import (
    ReplanResult,
    ReplanSettings,
    TaskMove,
    TaskSnapshot,
    lost_contact,
    replan,
)
from control_plane.planning.world import Booking, KitchenSpec, SkuSpec, World
from control_plane.store import Writer

STRANDED = "stranded_unreachable"
UNPLACEABLE = "no_feasible_kitchen"


def affected(kitchen: KitchenSpec, now: float, settings: ReplanSettings) -> str | None:
    """Why a kitchen's queued work needs re-planning (``None``: it does not)."""
    if kitchen.status != "active":
        return f"kitchen_{kitchen.status}"
    if lost_contact(kitchen, now, settings):
        return "kitchen_unreachable"
    if any(kitchen.effective_slots(s.station_id) < s.slots for s in kitchen.stations):
        return "equipment_failed"
    return None


def trigger(inputs: LoopInputs, settings: ReplanSettings) -> Hashable:
    """What re-planning depends on beyond the clock: each affected kitchen and why, and the
    state and lease of each of their tasks. While it is unchanged, re-planning again would
    only retry tasks that found no place, so the loop does that at an interval."""
    reasons = {
        k.kitchen_id: why
        for k in inputs.kitchens
        if (why := affected(k, inputs.now, settings)) is not None
    }
    tasks = frozenset(
        (t.task_id, t.state, t.fencing_token) for t in inputs.tasks if t.kitchen_id in reasons
    )
    return (tuple(sorted(reasons.items())), tasks)


@dataclass(frozen=True)
class ReplanPlan:
    """The core's result and the flags every open task should carry after it."""

    result: ReplanResult
    flags: Mapping[str, str]


def plan_replan(
    inputs: LoopInputs, prep: PrepTimeModel, settings: ReplanSettings
) -> ReplanPlan | None:
    """Run the core over the affected kitchens' tasks; ``None`` when no kitchen is affected."""
    now = inputs.now
    hit = {k.kitchen_id for k in inputs.kitchens if affected(k, now, settings) is not None}
    if not hit:
        return None
    promised = {o.order_id: o.promised_by for o in inputs.orders}
    snapshots: list[TaskSnapshot] = []
    bookings: list[Booking] = []
    for task in inputs.tasks:
        sku = inputs.skus.get(task.sku_id)
        nominal = sku.duration_s if sku else task.duration_s
        p90 = prep.estimate(task.kitchen_id, task.sku_id, nominal_s=nominal).p90_s
        if task.kitchen_id not in hit:
            start = task.started_at if task.started_at is not None else task.start_after
            end = max(task.planned_finish or 0.0, start + p90)
            bookings.append(Booking(task.kitchen_id, task.station_id, start, end, task.task_id))
            continue
        snapshots.append(_snapshot(task, p90, promised, sku.freshness_window_min if sku else 0))
    world = World(inputs.kitchens, inputs.skus, tuple(bookings), prep)
    result = replan(now, snapshots, world, settings)
    flags = {f.task_id: f.reason for f in (*result.stranded, *result.unplaceable)}
    return ReplanPlan(result, flags)


def _snapshot(
    task: OpenTask, p90_s: float, promised: Mapping[str, float], freshness_min: float
) -> TaskSnapshot:
    promises = [promised[o] for o in task.order_ids if o in promised]
    # Food must not be ready before the earliest handover it serves can still take it fresh.
    fresh_from = max(promises) - freshness_min * 60.0 if promises and freshness_min else -math.inf
    return TaskSnapshot(
        task_id=task.task_id,
        kitchen_id=task.kitchen_id,
        station_id=task.station_id,
        sku_id=task.sku_id,
        quantity=task.quantity,
        state=task.state,
        planned_start=task.start_after,
        planned_finish=task.planned_finish
        if task.planned_finish is not None
        else task.start_after + p90_s,
        finish_by=task.finish_by,
        fresh_from=min(fresh_from, task.finish_by),
        start_by=task.start_by,
    )


@dataclass(frozen=True)
class AppliedReplan:
    """What one transaction changed: moves applied, moves skipped (the task changed since it
    was read, or its new slot was taken since), moves refused because the new kitchen's stock
    ran short since the read (the task stays, flagged), flags raised and cleared."""

    moved: tuple[TaskMove, ...]
    skipped: tuple[str, ...]
    flagged: tuple[tuple[str, str], ...]
    unflagged: tuple[str, ...]
    out_of_stock: tuple[str, ...] = ()


def apply_replan(
    tx: Writer, inputs: LoopInputs, plan: ReplanPlan | None, *, now: float
) -> AppliedReplan:
    """Apply moves and flag changes inside ``tx`` (see the module docstring)."""
    tasks = {t.task_id: t for t in inputs.tasks}
    kitchens = {k.kitchen_id: k for k in inputs.kitchens}
    moved: list[TaskMove] = []
    skipped: list[str] = []
    short: dict[str, list[str]] = {}
    pending = list(plan.result.moves) if plan else []
    # A move whose slot is taken may be waiting for another move of this tick to vacate it:
    # retried once after the others, then left for the next tick.
    for last_pass in (False, True):
        full: list[TaskMove] = []
        for move in pending:
            task = tasks[move.task_id]
            kitchen = kitchens.get(move.to_kitchen_id)
            slots = kitchen.effective_slots(move.station_id) if kitchen else 0
            if _slot_taken(tx, task, move, slots):
                full.append(move)
                continue
            try:
                changed = _move(tx, task, move, inputs.skus.get(task.sku_id), now=now)
            except stock.OutOfStock as exc:
                short[move.task_id] = exc.ingredients
                continue
            if not changed:
                skipped.append(move.task_id)
                continue
            moved.append(move)
            _record_move(tx, task, move, now=now)
        if last_pass or len(full) == len(pending):
            skipped.extend(m.task_id for m in full)
            break
        pending = full
    wanted = dict(plan.flags) if plan else {}
    wanted.update(dict.fromkeys(short, UNPLACEABLE))
    flagged: list[tuple[str, str]] = []
    for task_id, reason in sorted(wanted.items()):
        flagged_task = tasks.get(task_id)
        if flagged_task is None or flagged_task.flag_reason == reason:
            continue
        # Only on the task as read: one that finished, moved or was leased since is left alone.
        if not tx.set_task_flag(
            task_id=task_id,
            reason=reason,
            at=now,
            expected_state=flagged_task.state,
            expected_fencing_token=flagged_task.fencing_token,
        ):
            continue
        flagged.append((task_id, reason))
        _record_flag(tx, flagged_task, reason, now=now, short_of=short.get(task_id, ()))
    moved_ids = {m.task_id for m in moved}
    unflagged: list[str] = []
    for task_id, was in sorted(inputs.flagged.items()):
        if task_id in wanted or task_id in moved_ids:
            continue
        if tx.set_task_flag(task_id=task_id, reason=None, at=None, expected_reason=was):
            unflagged.append(task_id)
            _record_unflag(tx, task_id, tasks.get(task_id), was, now=now)
    # Rung before the caller commits (only the transaction is at hand here): a sync it wakes
    # takes the store's write lock, held until that commit, so it sees the moves. Should the
    # commit fail, the ring costs those kitchens' agents one sync for nothing.
    ring_kitchens({m.from_kitchen_id for m in moved} | {m.to_kitchen_id for m in moved})
    return AppliedReplan(
        tuple(moved), tuple(skipped), tuple(flagged), tuple(unflagged), tuple(sorted(short))
    )


def _slot_taken(tx: Writer, task: OpenTask, move: TaskMove, slots: int) -> bool:
    """Whether the destination station is already at ``slots`` somewhere over the move's
    interval, as stored now (intake may have booked it since the tick read it). The task's own
    current slot does not count against it."""
    start, end = move.planned_start, move.planned_finish
    rows = tx.booked_intervals(
        kitchen_id=move.to_kitchen_id, station_id=move.station_id, after=start, before=end
    )
    intervals = [[float(r["start_after"]), float(r["planned_finish"]), int(r["n"])] for r in rows]
    if (task.kitchen_id, task.station_id) == (move.to_kitchen_id, move.station_id):
        for interval in intervals:
            if (interval[0], interval[1]) == (task.start_after, task.planned_finish):
                interval[2] -= 1
                break
    instants = {start} | {s for s, _, _ in intervals if start < s < end}
    peak = max(sum(n for s, e, n in intervals if s <= at < e) for at in instants)
    return peak >= slots


def _move(tx: Writer, task: OpenTask, move: TaskMove, sku: SkuSpec | None, *, now: float) -> bool:
    """Apply one move and move its stock, together or not at all; False when the task changed
    since it was read. Raises :class:`~control_plane.stock.OutOfStock` (nothing applied) when
    the new kitchen lacks what the task uses."""
    with tx.savepoint():
        changed = tx.replan_task(
            task_id=move.task_id,
            expected_state=task.state,
            expected_fencing_token=task.fencing_token,
            kitchen_id=move.to_kitchen_id,
            station_id=move.station_id,
            start_after=move.planned_start,
            predicted_ready_at=move.predicted_ready_at,
            planned_finish=move.planned_finish,
            at=now,
        )
        if not changed or move.to_kitchen_id == task.kitchen_id:
            return bool(changed)
        taken = stock.move_reservations(
            tx,
            task_id=task.task_id,
            to_kitchen_id=move.to_kitchen_id,
            order_needs=_order_needs(tx, task, sku),
            now=now,
        )
        stock.raise_low_stock_alerts(tx, kitchen_id=move.to_kitchen_id, ingredients=taken, now=now)
        return True


def _order_needs(tx: Writer, task: OpenTask, sku: SkuSpec | None) -> dict[str, dict[str, float]]:
    """What the task uses for each order it serves: its SKU's per-unit amounts times its
    quantity, shared among its orders by the units each ordered of the SKU (intake plans one
    order per task, so usually all of it goes to that order)."""
    if sku is None or not sku.ingredients or not task.order_ids:
        return {}
    units = {
        order_id: sum(
            int(item["quantity"])
            for item in tx.order_items(order_id)
            if item["sku_id"] == task.sku_id
        )
        for order_id in task.order_ids
    }
    total = sum(units.values())
    needs: dict[str, dict[str, float]] = {}
    for order_id in task.order_ids:
        share = units[order_id] / total if total else 1.0 / len(task.order_ids)
        for ingredient, per_unit in sku.ingredients:
            amount = per_unit * task.quantity * share
            if amount > 0:
                per_order = needs.setdefault(order_id, {})
                per_order[ingredient] = per_order.get(ingredient, 0.0) + amount
    return needs


def _record_move(tx: Writer, task: OpenTask, move: TaskMove, *, now: float) -> None:
    for order_id in task.order_ids:
        order = tx.order(order_id)
        if order is not None and order["kitchen_id"] != move.to_kitchen_id:
            elsewhere = [
                t
                for t in tx.tasks_of_order(order_id)
                if t["state"] in ("planned", "leased", "started")
                and t["kitchen_id"] != move.to_kitchen_id
            ]
            if not elsewhere:
                tx.set_order_kitchen(order_id=order_id, kitchen_id=move.to_kitchen_id, at=now)
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="replanner",
            action="task.replanned",
            subject_type="task",
            subject_id=task.task_id,
            order_id=order_id,
            kitchen_id=move.to_kitchen_id,
            station_id=move.station_id,
            reason=move.reason,
            details={
                "from_kitchen_id": move.from_kitchen_id,
                "to_kitchen_id": move.to_kitchen_id,
                "previous_state": task.state,
                "previous_fencing_token": task.fencing_token,
                "fencing_token": task.fencing_token + 1,
                "start_after": move.planned_start,
                "predicted_ready_at": move.predicted_ready_at,
                "planned_finish": move.planned_finish,
            },
        )


def _record_flag(
    tx: Writer, task: OpenTask, reason: str, *, now: float, short_of: Sequence[str] = ()
) -> None:
    for order_id in task.order_ids or (None,):
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="replanner",
            action="task.stranded" if reason == STRANDED else "task.unplaceable",
            subject_type="task",
            subject_id=task.task_id,
            order_id=order_id,
            kitchen_id=task.kitchen_id,
            station_id=task.station_id,
            reason=reason,
            details={
                "state": task.state,
                "lease_agent_id": task.lease_agent_id,
                "fencing_token": task.fencing_token,
                # Never moved by the control plane: it may be cooking; an operator decides.
                "moved": False,
                # The kitchen it was to move to ran short of these since the tick read it.
                **({"out_of_stock": list(short_of)} if short_of else {}),
            },
        )


def _record_unflag(
    tx: Writer, task_id: str, task: OpenTask | None, was: str, *, now: float
) -> None:
    """A flag cleared because its condition did (the kitchen is heard again, a place was
    found, the task finished): audited like the flag was."""
    row = tx.task(task_id) if task is None else None
    kitchen_id = task.kitchen_id if task else (str(row["kitchen_id"]) if row else None)
    station_id = task.station_id if task else (str(row["station_id"]) if row else None)
    for order_id in (task.order_ids if task else ()) or (None,):
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="replanner",
            action="task.flag_cleared",
            subject_type="task",
            subject_id=task_id,
            order_id=order_id,
            kitchen_id=kitchen_id,
            station_id=station_id,
            reason=was,
            details={
                "previous_flag": was,
                "state": task.state if task else (str(row["state"]) if row else None),
            },
        )
