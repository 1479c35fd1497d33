"""Re-planning moves only tasks that cannot have started (SPEC guarantee 3)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from control_plane.planning.replan import TaskSnapshot, needs_of, replan
from control_plane.planning.world import KitchenSpec, World
from tests.fixtures_planning import SKUS, T0, concurrency_at, kitchen

FAST = settings(max_examples=80, deadline=None)


def task(
    task_id: str,
    state: str,
    *,
    kitchen_id: str = "k1",
    start: float = T0 + 600,
    ever_leased: bool = False,
    start_by: float | None = None,
    sku_id: str = "stew",
) -> TaskSnapshot:
    duration = SKUS[sku_id].duration_s * 1.25
    station = SKUS[sku_id].station_id
    return TaskSnapshot(
        task_id,
        kitchen_id,
        station,
        sku_id,
        1,
        state,
        start,
        start + duration,
        start + duration + 3600,
        ever_leased=ever_leased or state == "leased",
        start_by=start_by,
    )


def world(*kitchens: KitchenSpec) -> World:
    return World(tuple(kitchens), SKUS)


def test_kitchen_going_offline_moves_unleased_work_and_strands_leased_work() -> None:
    """Never-leased tasks move to another kitchen; leased and started ones stay, flagged."""
    w = world(kitchen("k1", status="offline", last_sync_at=T0 - 3600), kitchen("k2"))
    tasks = [
        task("planned", "planned"),
        task("leased", "leased", start_by=T0 + 900),
        task("started", "started"),
    ]
    result = replan(T0, tasks, w)
    assert [(m.task_id, m.to_kitchen_id) for m in result.moves] == [("planned", "k2")]
    assert [(f.task_id, f.reason) for f in result.stranded] == [
        ("leased", "stranded_unreachable"),
        ("started", "stranded_unreachable"),
    ]


def test_unleased_work_leaves_a_kitchen_whose_agent_went_quiet() -> None:
    """An active kitchen not heard from for minutes cannot lease: its planned work moves, its
    leased work is flagged, and nothing moves onto it."""
    quiet = kitchen("k1", last_sync_at=T0 - 3600)
    w = world(quiet, kitchen("k2"))
    tasks = [task("planned", "planned"), task("leased", "leased", start_by=T0 + 900)]
    result = replan(T0, tasks, w)
    assert [(m.task_id, m.to_kitchen_id, m.reason) for m in result.moves] == [
        ("planned", "k2", "kitchen_unreachable")
    ]
    assert [f.task_id for f in result.stranded] == ["leased"]


def test_expired_lease_of_a_reachable_agent_stays_for_the_sync_path() -> None:
    """Start-by passed and the kitchen synced since with an empty outbox: the holder may still
    have started it offline, so re-planning leaves it (reclaiming is the sync path's job)."""
    w = world(kitchen("k1", last_sync_at=T0 - 10))
    result = replan(T0, [task("t", "leased", start=T0 + 60, start_by=T0 - 60)], w)
    assert result.moves == () and result.stranded == () and result.unplaceable == ()


def test_leased_task_on_a_paused_kitchen_stays() -> None:
    """Even on a paused kitchen with another ready to take it, a leased task does not move."""
    w = world(kitchen("k1", status="paused", last_sync_at=T0 - 10), kitchen("k2"))
    result = replan(T0, [task("t", "leased", start_by=T0 - 60)], w)
    assert result.moves == ()


def test_released_task_whose_slot_still_fits_stays() -> None:
    """A task released by its agent (or moved once: both bump its token) is not moved again
    while its slot holds."""
    w = world(kitchen("k1"))
    tasks = [task("kept", "planned", start=T0 + 7200), task("rel", "planned", ever_leased=True)]
    assert replan(T0, tasks, w).moves == ()


def test_replanning_the_result_again_moves_nothing() -> None:
    """A released task whose start passed is moved once; re-planning the moved task (now
    planned at its new slot) leaves it where it is."""
    w = world(kitchen("k1"))
    first = replan(T0, [task("rel", "planned", start=T0 - 60, ever_leased=True)], w)
    (move,) = first.moves
    assert move.reason == "start_missed"
    again = task("rel", "planned", start=move.planned_start, ever_leased=True)
    again = TaskSnapshot(**{**vars(again), "planned_finish": move.planned_finish})
    assert replan(T0 + 1, [again], w).moves == ()


def test_failed_equipment_moves_work_that_no_longer_fits() -> None:
    """One of two grills fails: of two overlapping planned batches, one moves."""
    w = world(kitchen("k1", equipment_health=("ok", "failed", "ok")), kitchen("k2"))
    tasks = [
        task("a", "planned", sku_id="burger", start=T0 + 600),
        task("b", "planned", sku_id="burger", start=T0 + 600),
    ]
    result = replan(T0, tasks, w)
    assert [(m.task_id, m.reason) for m in result.moves] == [("b", "capacity_lost")]


def test_nowhere_to_go_is_flagged_not_dropped() -> None:
    """With every kitchen paused, a task to move is reported unplaceable."""
    w = world(kitchen("k1", status="paused"))
    result = replan(T0, [task("t", "planned")], w)
    assert [(f.task_id, f.reason) for f in result.unplaceable] == [("t", "no_feasible_kitchen")]


def test_work_moves_only_to_a_kitchen_with_its_ingredients() -> None:
    """k1 goes offline with two burgers queued: k2 (nearer in id, but one patty left) gets
    none, k3 (stock for one burger) gets one, the other has nowhere to go."""
    w = world(
        kitchen("k1", status="offline"),
        kitchen("k2", stock={"patty": 1.0, "bun": 9.0, "potato": 9.0}),
        kitchen("k3", stock={"patty": 2.0, "bun": 2.0, "potato": 0.0}),
    )
    tasks = [
        task("a", "planned", sku_id="burger", start=T0 + 600),
        task("b", "planned", sku_id="burger", start=T0 + 900),
    ]
    two = [TaskSnapshot(**{**vars(t), "quantity": 2}) for t in tasks]
    result = replan(T0, two, w)
    assert [(m.task_id, m.to_kitchen_id) for m in result.moves] == [("a", "k3")]
    assert [f.task_id for f in result.unplaceable] == ["b"]


def test_staying_home_needs_no_new_stock() -> None:
    """A task re-timed at its own kitchen (its start passed) keeps its reservation there: an
    empty stock does not keep it from staying."""
    w = world(kitchen("k1", stock={"patty": 0.0, "bun": 0.0, "potato": 0.0}))
    result = replan(T0, [task("t", "planned", sku_id="burger", start=T0 - 60)], w)
    assert [(m.task_id, m.to_kitchen_id) for m in result.moves] == [("t", "k1")]


STATES = ["planned", "leased", "started", "done", "failed", "cancelled"]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[float, list[TaskSnapshot], World]:
    kitchens = [
        kitchen(
            kitchen_id,
            status=draw(st.sampled_from(["active", "active", "paused", "offline"])),
            equipment_health=draw(
                st.none() | st.tuples(*[st.sampled_from(["ok", "failed", "offline"])] * 3)
            ),
            stock=draw(
                st.none()
                | st.fixed_dictionaries(
                    {i: st.sampled_from([0.0, 1.0, 2.0, 5.0]) for i in ("patty", "bun", "potato")}
                )
            ),
            last_sync_at=draw(st.none() | st.floats(T0 - 600, T0)),
            outbox_depth=draw(st.sampled_from([0, 0, 5])),
        )
        for kitchen_id in ("k1", "k2", "k3")
    ]
    tasks = []
    for n in range(draw(st.integers(0, 12))):
        state = draw(st.sampled_from(STATES))
        tasks.append(
            task(
                f"t{n:02d}",
                state,
                kitchen_id=draw(st.sampled_from(["k1", "k2", "k3"])),
                start=T0 + draw(st.floats(-900, 7200)),
                ever_leased=draw(st.booleans()),
                start_by=draw(st.none() | st.floats(T0 - 600, T0 + 600)),
                sku_id=draw(st.sampled_from(["burger", "fries", "stew"])),
            )
        )
    return T0, tasks, World(tuple(kitchens), SKUS)


EXPIRED_LEASE = (
    T0,
    [task("t", "leased", start=T0 + 60, start_by=T0 - 60)],
    world(kitchen("k1", status="paused", last_sync_at=T0 - 10), kitchen("k2")),
)


@FAST
@given(scenario())
@example(EXPIRED_LEASE)
def test_replanning_never_moves_a_task_that_may_have_started(
    case: tuple[float, list[TaskSnapshot], World],
) -> None:
    """Only planned tasks move: no leased or started (or finished) task is ever moved, whatever
    its start-by, the kitchen's last sync or its outbox; leased and started ones on a kitchen
    that is not reachable are stranded instead."""
    now, tasks, w = case
    by_id = {t.task_id: t for t in tasks}
    result = replan(now, tasks, w)
    for move in result.moves:
        assert by_id[move.task_id].state == "planned"
    for flagged in result.stranded:
        assert by_id[flagged.task_id].state in {"leased", "started"}


@FAST
@given(scenario())
def test_moved_tasks_land_on_active_kitchens_within_slots(
    case: tuple[float, list[TaskSnapshot], World],
) -> None:
    """Re-placed tasks go to active kitchens, never where the station (with the work that stays
    and the other moves) is already at its effective slots."""
    now, tasks, w = case
    result = replan(now, tasks, w)
    kitchens = {k.kitchen_id: k for k in w.kitchens}
    moved = {m.task_id for m in result.moves}
    gone = moved | {f.task_id for f in result.unplaceable}
    for move in result.moves:
        k = kitchens[move.to_kitchen_id]
        assert k.status == "active"
        assert move.planned_start >= now
        here = (move.to_kitchen_id, move.station_id)
        occupied = [
            (t.planned_start, t.planned_finish)
            for t in tasks
            if t.task_id not in gone
            and t.state not in {"done", "failed", "cancelled"}
            and (t.kitchen_id, t.station_id) == here
        ] + [
            (m.planned_start, m.planned_finish)
            for m in result.moves
            if (m.to_kitchen_id, m.station_id) == here
        ]
        instants = {move.planned_start} | {
            start for start, _ in occupied if move.planned_start <= start < move.planned_finish
        }
        slots = k.effective_slots(move.station_id)
        assert all(concurrency_at(occupied, i) <= slots for i in instants)
    stranded_ids = {f.task_id for f in result.stranded}
    assert not moved & stranded_ids
    assert all(f.reason == "stranded_unreachable" for f in result.stranded)


@FAST
@given(scenario())
def test_moves_never_take_more_stock_than_a_kitchen_has(
    case: tuple[float, list[TaskSnapshot], World],
) -> None:
    """What every task moved onto a kitchen from elsewhere uses, together, fits in that
    kitchen's stock (a kitchen that tracks none is not limited)."""
    now, tasks, w = case
    by_id = {t.task_id: t for t in tasks}
    taken: dict[tuple[str, str], float] = {}
    for move in replan(now, tasks, w).moves:
        if move.to_kitchen_id == move.from_kitchen_id:
            continue
        for ingredient, amount in needs_of(by_id[move.task_id], w).items():
            key = (move.to_kitchen_id, ingredient)
            taken[key] = taken.get(key, 0.0) + amount
    kitchens = {k.kitchen_id: k for k in w.kitchens}
    for (kitchen_id, ingredient), amount in taken.items():
        stock = kitchens[kitchen_id].stock
        assert stock is None or amount <= stock.get(ingredient, 0.0) + 1e-9
