"""Re-planning after a kitchen pauses or goes offline, equipment fails or predictions drift.

SPEC guarantee 3: only tasks that **cannot have started** move, and re-planning moves only
``planned`` tasks (never leased, or released by their agent). A leased or started task never
moves here: its holder may have started it offline. Leased or started tasks on a kitchen the
control plane cannot reach are *stranded*: flagged for the SLA engine, moved only by an audited
operator decision. An expired lease is reclaimed by the sync path
(:func:`control_plane.leases.redeliver_or_reclaim`, on the holder's own clock), after which the
task is ``planned`` again.

A planned task moves only when its placement no longer holds: its kitchen is not active or its
agent went quiet, its station lost the capacity it needs, its start passed without a lease, or
its p90 no longer fits before ``finish_by``. Having been leased once (or moved once) is no
reason to move it: a released task whose slot still fits stays there, so re-planning twice
moves nothing the first time left in place. Tasks never go to a kitchen
whose agent went quiet (a kitchen that never synced is not known to be lost), nor to another
kitchen whose stock (``KitchenSpec.stock``, what is left after reservations) lacks what the task
uses, counting what earlier moves of the same call take there. Staying at its own kitchen needs
no stock: the task holds its reservation there already. The rest keep their slots, so
re-planning is stable.

>>> from control_plane.planning.world import KitchenSpec, SkuSpec, StationSpec, World
>>> sku = SkuSpec("soup", station_id="stove", duration_s=600.0, freshness_window_min=60)
>>> kitchens = (KitchenSpec("k1", "offline", (StationSpec("stove", 1),)),
...             KitchenSpec("k2", "active", (StationSpec("stove", 1),)))
>>> task = TaskSnapshot("t1", "k1", "stove", "soup", 1, "planned", 1000.0, 1750.0, 3000.0)
>>> result = replan(0.0, [task], World(kitchens, {"soup": sku}))
>>> [(m.task_id, m.to_kitchen_id, m.reason) for m in result.moves]
[('t1', 'k2', 'kitchen_unavailable')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control_plane.planning.scheduler import Placement, ReadyWindow, Scheduler
from control_plane.planning.world import KitchenSpec, World

TERMINAL = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True)
class TaskSnapshot:
    """A prep task as the control plane knows it now.

    ``promised_by`` and ``transport_s_by_kitchen`` let the task move to a kitchen with another
    transport time; without them ``finish_by`` is kept wherever it goes.
    """

    task_id: str
    kitchen_id: str
    station_id: str
    sku_id: str
    quantity: int
    state: str  # planned | leased | started | done | failed | cancelled
    planned_start: float
    planned_finish: float
    finish_by: float
    fresh_from: float = -math.inf
    ever_leased: bool = False  # informational: being leased once is no reason to move
    start_by: float | None = None
    promised_by: float | None = None
    transport_s_by_kitchen: Mapping[str, float] | None = None


@dataclass(frozen=True)
class TaskMove:
    """A task re-placed (maybe at the same kitchen, at another time)."""

    task_id: str
    from_kitchen_id: str
    to_kitchen_id: str
    station_id: str
    planned_start: float
    predicted_ready_at: float
    planned_finish: float
    reason: str


@dataclass(frozen=True)
class FlaggedTask:
    """A task that needs a person: stranded on an unreachable kitchen, or nowhere to go."""

    task_id: str
    kitchen_id: str
    state: str
    reason: str  # stranded_unreachable | no_feasible_kitchen


@dataclass(frozen=True)
class ReplanResult:
    """Moves to apply (with a fencing-token bump), and tasks flagged for the SLA engine."""

    moves: tuple[TaskMove, ...]
    stranded: tuple[FlaggedTask, ...]
    unplaceable: tuple[FlaggedTask, ...]


@dataclass(frozen=True)
class ReplanSettings:
    """``unreachable_after_s``: no sync for this long and a kitchen counts as unreachable."""

    unreachable_after_s: float = 120.0
    guard_s: float = 0.0


def reachable(kitchen: KitchenSpec, now: float, settings: ReplanSettings) -> bool:
    """Whether the kitchen's agent has synced recently enough to count as in contact."""
    return kitchen.last_sync_at is not None and now - kitchen.last_sync_at <= (
        settings.unreachable_after_s
    )


def lost_contact(kitchen: KitchenSpec, now: float, settings: ReplanSettings) -> bool:
    """Whether an agent that used to sync has gone quiet (never synced: not known to be lost)."""
    return kitchen.last_sync_at is not None and not reachable(kitchen, now, settings)


def may_have_started(task: TaskSnapshot) -> bool:
    """False only for a ``planned`` task. A leased one may have been started by its holder
    while offline, whatever the kitchen's other agents or the server clock say; its expired
    lease is the sync path's to reclaim, with the holder's own build time."""
    return task.state != "planned"


def replan(
    now: float,
    tasks: Sequence[TaskSnapshot],
    world: World,
    settings: ReplanSettings = ReplanSettings(),
) -> ReplanResult:
    """Decide which tasks move where, and which are stranded; deterministic."""
    kitchens = {k.kitchen_id: k for k in world.kitchens}
    scheduler = Scheduler(now, world, guard_s=settings.guard_s, asap=False)
    live = sorted((t for t in tasks if t.state not in TERMINAL), key=_order)
    stranded: list[FlaggedTask] = []
    movable: list[TaskSnapshot] = []
    for task in live:
        kitchen = kitchens.get(task.kitchen_id)
        if may_have_started(task):
            # Immovable work keeps its slot, even beyond a station's reduced capacity.
            if task.kitchen_id in scheduler.kitchens:
                scheduler.timeline(task.kitchen_id, task.station_id).book(
                    task.planned_start, task.planned_finish
                )
            if kitchen is None or not reachable(kitchen, now, settings):
                stranded.append(
                    FlaggedTask(task.task_id, task.kitchen_id, task.state, "stranded_unreachable")
                )
        else:
            movable.append(task)
    to_move: list[tuple[TaskSnapshot, str]] = []
    for task in movable:
        reason = _why_move(task, kitchens.get(task.kitchen_id), now, world, scheduler, settings)
        if reason is None:
            timeline = scheduler.timeline(task.kitchen_id, task.station_id)
            if timeline.peak(task.planned_start, task.planned_finish) < timeline.slots:
                timeline.book(task.planned_start, task.planned_finish)
                continue
            reason = "capacity_lost"
        to_move.append((task, reason))
    moves: list[TaskMove] = []
    unplaceable: list[FlaggedTask] = []
    for task, reason in sorted(to_move, key=lambda p: (p[0].finish_by, p[0].task_id)):
        placement = _place(task, now, world, scheduler, settings)
        if placement is None:
            unplaceable.append(
                FlaggedTask(task.task_id, task.kitchen_id, task.state, "no_feasible_kitchen")
            )
            continue
        scheduler.book(placement)
        if placement.kitchen_id != task.kitchen_id:
            # What the move will take there; what it gives back at home is not counted (the
            # shell only gives back what was reserved), so this errs on the side of "short".
            for ingredient, amount in needs_of(task, world).items():
                scheduler.reserved[placement.kitchen_id, ingredient] += amount
        moves.append(
            TaskMove(
                task.task_id,
                task.kitchen_id,
                placement.kitchen_id,
                placement.station_id,
                placement.start,
                placement.predicted_ready_at,
                placement.planned_finish,
                reason,
            )
        )
    return ReplanResult(tuple(moves), tuple(stranded), tuple(unplaceable))


def needs_of(task: TaskSnapshot, world: World) -> dict[str, float]:
    """What the task uses of each ingredient (its SKU's per-unit amounts times its quantity)."""
    sku = world.skus.get(task.sku_id)
    if sku is None:
        return {}
    needs: dict[str, float] = {}
    for ingredient, per_unit in sku.ingredients:
        if per_unit > 0:
            needs[ingredient] = needs.get(ingredient, 0.0) + per_unit * task.quantity
    return needs


def _order(task: TaskSnapshot) -> tuple[float, str]:
    return (task.planned_start, task.task_id)


def _why_move(
    task: TaskSnapshot,
    kitchen: KitchenSpec | None,
    now: float,
    world: World,
    scheduler: Scheduler,
    settings: ReplanSettings,
) -> str | None:
    sku = world.skus.get(task.sku_id)
    if kitchen is None or sku is None or kitchen.status != "active":
        return "kitchen_unavailable"
    if lost_contact(kitchen, now, settings):
        # It cannot be leased there; it never was, so it cannot have started.
        return "kitchen_unreachable"
    if scheduler.can_make(kitchen, sku) is not None:
        return "equipment_unavailable"
    if task.planned_start < now:
        return "start_missed"
    if task.planned_start + scheduler.estimate(kitchen.kitchen_id, sku).p90_s > task.finish_by:
        return "prediction_drift"
    return None


def _place(
    task: TaskSnapshot, now: float, world: World, scheduler: Scheduler, settings: ReplanSettings
) -> Placement | None:
    sku = world.skus.get(task.sku_id)
    if sku is None:
        return None
    needs = needs_of(task, world)
    options: list[tuple[tuple[float, float, str], Placement]] = []
    for kitchen_id, kitchen in scheduler.kitchens.items():
        if scheduler.can_make(kitchen, sku) is not None or lost_contact(kitchen, now, settings):
            continue
        if kitchen_id != task.kitchen_id and needs and scheduler.stock_short(kitchen, needs):
            continue
        due = task.finish_by
        if task.promised_by is not None and task.transport_s_by_kitchen is not None:
            transport_s = task.transport_s_by_kitchen.get(kitchen_id)
            if transport_s is None:
                continue
            due = task.promised_by - transport_s
        window = ReadyWindow(due=due, fresh_from=task.fresh_from, not_before=now)
        placement = scheduler.fit(kitchen_id, sku, window)
        if placement is not None:
            # Just in time first, then staying home, then by id.
            shift = due - placement.planned_finish
            home = 0.0 if kitchen_id == task.kitchen_id else 1.0
            options.append(((shift, home, kitchen_id), placement))
    return min(options, key=lambda o: o[0])[1] if options else None
