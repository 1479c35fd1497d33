"""The control loop over a real SQLite store with a controlled clock: prep-time learning, SLA
alerts, backpressure overrides and re-planning, each written once and published."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from control_plane import audit, backpressure_overrides
from control_plane.config import Settings
from control_plane.control_loop import ControlLoop, _step_levels
from control_plane.loop_inputs import read_inputs
from control_plane.loop_lock import LoopLock
from control_plane.metrics import Metrics
from control_plane.planning.backpressure import (
    BackpressureSettings,
    BackpressureState,
    Override,
    ScopeState,
    Signals,
    step,
)
from control_plane.planning.replan import ReplanSettings
from control_plane.planning_state import PlanningState
from control_plane.prep_times_view import prep_times_view
from control_plane.replanning import apply_replan, plan_replan
from control_plane.store import Store, Writer

T0 = 1_800_000_000.0
UNREACHABLE_S = 120.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        db_path=tmp_path / "cp.db",
        agent_unreachable_after_s=UNREACHABLE_S,
        backpressure_min_dwell_s=0,
        sla_clear_margin_s=60,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """Kitchens k1 and k2 (one grill slot each, an agent each that synced at T0), SKU burger
    (600 s, 60 min fresh)."""
    instance = Store.open(settings.db_path)
    with instance.write() as tx:
        for kitchen_id in ("k1", "k2"):
            tx.insert_kitchen(
                kitchen_id=kitchen_id,
                name=kitchen_id,
                timezone="UTC",
                location=None,
                status="active",
                created_at=T0,
            )
            tx.insert_station(kitchen_id=kitchen_id, station_id="grill", name="Grill", slots=1)
            tx.insert_agent(
                agent_id=f"agent-{kitchen_id}",
                kitchen_id=kitchen_id,
                name="box",
                credential_hash=f"hash-{kitchen_id}",
                agent_version="1",
                enrolled_at=T0,
            )
        tx.insert_sku(
            sku_id="burger",
            name="Burger",
            station_id="grill",
            recipe_steps_json="[]",
            total_duration_s=600.0,
            freshness_window_min=60,
            priority="normal",
            hold="hot",
            created_at=T0,
        )
    heartbeat(instance, "k1", T0)
    heartbeat(instance, "k2", T0)
    yield instance
    instance.close()


def heartbeat(store: Store, kitchen_id: str, at: float) -> None:
    with store.write() as tx:
        tx.record_heartbeat(
            agent_id=f"agent-{kitchen_id}",
            last_seen_at=at,
            clock_offset_s=0.0,
            clock_offset_measured_at=at,
            clock_samples=1,
            agent_version="1",
            outbox_depth=0,
            reconnect_json=None,
        )


def add_order(
    tx: Writer,
    order_id: str,
    task_id: str,
    *,
    kitchen_id: str = "k1",
    promised_by: float,
    start_after: float = T0,
) -> None:
    """An order of one burger and its planned task."""
    tx.insert_order(
        order_id=order_id,
        idempotency_key=order_id,
        status="planned",
        reason=None,
        kitchen_id=kitchen_id,
        promised_by=promised_by,
        destination="store",
        transport_min=0.0,
        priority="normal",
        predicted_ready_at=start_after + 600,
        created_at=T0,
    )
    tx.insert_order_item(order_id=order_id, line=0, sku_id="burger", quantity=1)
    tx.insert_task(
        task_id=task_id,
        kitchen_id=kitchen_id,
        station_id="grill",
        sku_id="burger",
        quantity=1,
        duration_s=600.0,
        start_after=start_after,
        finish_by=promised_by,
        predicted_ready_at=start_after + 600,
        created_at=T0,
    )
    tx.link_task_order(task_id=task_id, order_id=order_id)


def complete(store: Store, task_id: str, *, started_at: float, finished_at: float) -> None:
    """A task leased, started and done, with its ``task.done`` audit record."""
    with store.write() as tx:
        task = tx.task(task_id)
        assert task is not None
        tx.lease_task(
            task_id=task_id,
            agent_id=f"agent-{task['kitchen_id']}",
            fencing_token=1,
            leased_at=started_at,
            start_by=started_at + 60,
        )
        tx.set_task_started(task_id=task_id, started_at=started_at, at=started_at)
        tx.set_task_finished(
            task_id=task_id, state="done", finished_at=finished_at, failure_reason=None, at=T0
        )
        audit.append(
            tx,
            at=finished_at,
            actor_type="agent",
            actor_id=f"agent-{task['kitchen_id']}",
            action="task.done",
            subject_type="task",
            subject_id=task_id,
            kitchen_id=task["kitchen_id"],
        )


def loop_of(store: Store, settings: Settings, clock: Clock) -> tuple[ControlLoop, PlanningState]:
    planning = PlanningState()
    loop = ControlLoop(
        store=store, settings=settings, metrics=Metrics(), planning=planning, clock=clock
    )
    return loop, planning


def actions(store: Store, action: str) -> list[dict[str, Any]]:
    with store.read() as reader:
        rows = reader.audit_page(after_seq=0, limit=1000, action=action)
    return [dict(row) | {"details": json.loads(row["details_json"])} for row in rows]


def test_each_completion_is_learned_once_including_late_reports(
    store: Store, settings: Settings
) -> None:
    """Completions are observed once each, a late-reported one too, and a restarted loop
    rebuilds the same model from the store."""
    with store.write() as tx:
        for n in range(7):
            add_order(tx, f"o{n}", f"t{n}", promised_by=T0 + 7200)
    for n in range(6):
        complete(store, f"t{n}", started_at=T0 + n * 1000, finished_at=T0 + n * 1000 + 500)
    clock = Clock(T0 + 10_000)
    loop, planning = loop_of(store, settings, clock)
    first, again = loop.tick(), loop.tick()
    # Reported late: it happened before the others but arrives after them.
    complete(store, "t6", started_at=T0 - 5000, finished_at=T0 - 4500)
    late = loop.tick()
    estimate = planning.prep_model().estimate("k1", "burger", nominal_s=600.0)
    restarted, restarted_planning = loop_of(store, settings, clock)
    restarted.tick()
    rebuilt = restarted_planning.prep_model().estimate("k1", "burger", nominal_s=600.0)
    assert (first.completions_learned, again.completions_learned) == (6, 0)
    assert late.completions_learned == 1
    assert (estimate.p50_s, estimate.source, estimate.samples) == (500.0, "kitchen_sku", 7)
    assert rebuilt == estimate


def test_sla_alert_is_raised_with_lead_and_cause_then_cleared_once(
    store: Store, settings: Settings
) -> None:
    """An order queued behind another misses its promise: one alert with its lead time and
    cause, audited; once the queue clears, the alert is resolved and that is audited too."""
    with store.write() as tx:
        add_order(tx, "o-first", "t-a", promised_by=T0 + 1200)
        add_order(tx, "o-late", "t-b", promised_by=T0 + 900)
    loop, planning = loop_of(store, settings, Clock(T0))
    raised, repeated = loop.tick(), loop.tick()
    prediction = planning.prediction("o-late")
    with store.read() as reader:
        (alert,) = reader.open_alerts_of_kind("sla_at_risk")
    with store.write() as tx:
        tx.cancel_task(task_id="t-a", reason="order_cancelled", at=T0)
    cleared = loop.tick()
    with store.read() as reader:
        still_open = reader.open_alerts_of_kind("sla_at_risk")
    (raise_record,) = actions(store, "order.sla_at_risk")
    (clear_record,) = actions(store, "order.sla_recovered")
    assert (raised.sla_raised, repeated.sla_raised, cleared.sla_cleared) == (1, 0, 1)
    assert prediction is not None and prediction.margin_s < 0
    assert (alert["order_id"], alert["cause"], alert["value"]) == ("o-late", "queue", 900.0)
    assert "order o-late will miss its SLA in 15 minutes" in alert["message"]
    assert raise_record["order_id"] == "o-late" and raise_record["reason"] == "queue"
    assert raise_record["details"]["lead_s"] == 900.0
    assert clear_record["details"]["alert_id"] == alert["alert_id"]
    assert still_open == []


def test_sla_alerts_raised_before_a_restart_are_cleared_after_it(
    store: Store, settings: Settings
) -> None:
    """A restarted loop restores the raised alerts and resolves them when the order closes."""
    with store.write() as tx:
        add_order(tx, "o-first", "t-a", promised_by=T0 + 1200)
        add_order(tx, "o-late", "t-b", promised_by=T0 + 900)
    loop, _ = loop_of(store, settings, Clock(T0))
    loop.tick()
    with store.write() as tx:
        tx.set_order_status(order_id="o-late", status="cancelled", at=T0)
        tx.cancel_task(task_id="t-b", reason="order_cancelled", at=T0)
    restarted, _ = loop_of(store, settings, Clock(T0 + 10))
    closed = restarted.tick()
    with store.read() as reader:
        open_alerts = reader.open_alerts_of_kind("sla_at_risk")
    assert closed.sla_cleared == 1
    assert open_alerts == []
    assert len(actions(store, "order.sla_closed")) == 1


def test_operator_override_pins_a_level_across_restarts_and_its_removal_recovers(
    store: Store, settings: Settings
) -> None:
    """An override applies at the next tick with the operator's reason, still holds after a
    restart, and once removed the scope steps back down; every change is audited."""
    clock = Clock(T0)
    backpressure_overrides.set_override(
        store, "k1", level="shed", reason="deep clean", until=None, now=T0, actor="ops"
    )
    loop, planning = loop_of(store, settings, clock)
    loop.tick()
    pinned = planning.decisions()["k1"]
    restarted, restarted_planning = loop_of(store, settings, clock)
    restarted.tick()
    after_restart = restarted_planning.decisions()["k1"]
    backpressure_overrides.clear_override(store, "k1", now=T0 + 1, actor="ops")
    levels = []
    for n in range(3):
        clock.now = T0 + 2 + n
        restarted.tick()
        levels.append(restarted_planning.decisions()["k1"].level)
    changes = [
        (r["subject_id"], r["details"]["from"], r["details"]["to"])
        for r in actions(store, "backpressure.level_changed")
    ]
    assert (pinned.level, pinned.why) == ("shed", "operator override by ops: deep clean")
    assert after_restart.level == "shed" and not after_restart.changed
    assert levels == ["throttle", "normal", "normal"]
    assert changes == [
        ("k1", "normal", "shed"),
        ("k1", "shed", "throttle"),
        ("k1", "throttle", "normal"),
    ]
    assert [r["actor_id"] for r in actions(store, "backpressure.override_set")] == ["ops"]
    assert len(actions(store, "backpressure.override_cleared")) == 1


def test_quiet_kitchen_unleased_work_moves_and_leased_work_is_flagged_once(
    store: Store, settings: Settings
) -> None:
    """k1's agent goes quiet: its planned task moves to k2 under a new fencing token (audited
    with the reason); its leased and started tasks stay, flagged stranded once."""
    with store.write() as tx:
        add_order(tx, "o1", "t-planned", promised_by=T0 + 7200)
        add_order(tx, "o2", "t-leased", promised_by=T0 + 7200)
        add_order(tx, "o3", "t-started", promised_by=T0 + 7200)
        for task_id in ("t-leased", "t-started"):
            tx.lease_task(
                task_id=task_id,
                agent_id="agent-k1",
                fencing_token=1,
                leased_at=T0,
                start_by=T0 + 3600,
            )
        tx.set_task_started(task_id="t-started", started_at=T0, at=T0)
    clock = Clock(T0 + UNREACHABLE_S + 30)
    heartbeat(store, "k2", clock.now)
    loop, _ = loop_of(store, settings, clock)
    first = loop.tick()
    second = loop.tick()
    with store.read() as reader:
        moved = reader.task("t-planned")
        leased = reader.task("t-leased")
        started = reader.task("t-started")
        order = reader.order("o1")
    (replanned,) = actions(store, "task.replanned")
    stranded = actions(store, "task.stranded")
    assert first.replanned == ("t-planned",)
    assert second.replanned == () and second.flagged == ()
    assert moved is not None and (moved["kitchen_id"], moved["state"]) == ("k2", "planned")
    assert moved["fencing_token"] == 1
    assert order is not None and order["kitchen_id"] == "k2"
    assert (replanned["reason"], replanned["details"]["from_kitchen_id"]) == (
        "kitchen_unreachable",
        "k1",
    )
    assert leased is not None and (leased["kitchen_id"], leased["state"]) == ("k1", "leased")
    assert started is not None and (started["kitchen_id"], started["state"]) == ("k1", "started")
    assert sorted(r["subject_id"] for r in stranded) == ["t-leased", "t-started"]
    assert {leased["flag_reason"], started["flag_reason"]} == {"stranded_unreachable"}


def test_stranded_flags_clear_when_the_kitchen_is_heard_again(
    store: Store, settings: Settings
) -> None:
    """Once the agent syncs again its leased work is no longer flagged."""
    with store.write() as tx:
        add_order(tx, "o2", "t-leased", promised_by=T0 + 7200)
        tx.lease_task(
            task_id="t-leased",
            agent_id="agent-k1",
            fencing_token=1,
            leased_at=T0,
            start_by=T0 + 3600,
        )
    clock = Clock(T0 + UNREACHABLE_S + 30)
    loop, _ = loop_of(store, settings, clock)
    loop.tick()
    heartbeat(store, "k1", clock.now)
    heartbeat(store, "k2", clock.now)
    loop.tick()
    with store.read() as reader:
        task = reader.task("t-leased")
    assert task is not None and task["flag_reason"] is None
    assert len(actions(store, "task.stranded")) == 1


def test_a_move_decided_on_a_stale_read_is_not_applied(store: Store, settings: Settings) -> None:
    """If the kitchen leased the task after the tick read it, the move is skipped (it may have
    started), and the task stays with its lease holder."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200)
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
    now = T0 + 10
    with store.read() as reader:
        inputs = read_inputs(reader, now=now, after_audit_seq=0)
    plan = plan_replan(inputs, PlanningState().prep_model(), ReplanSettings(UNREACHABLE_S))
    with store.write() as tx:
        tx.lease_task(
            task_id="t1", agent_id="agent-k1", fencing_token=1, leased_at=now, start_by=now + 60
        )
    with store.write() as tx:
        applied = apply_replan(tx, inputs, plan, now=now)
    with store.read() as reader:
        task = reader.task("t1")
    assert plan is not None and [m.task_id for m in plan.result.moves] == ["t1"]
    assert applied.moved == () and applied.skipped == ("t1",)
    assert task is not None and (task["kitchen_id"], task["state"]) == ("k1", "leased")
    assert actions(store, "task.replanned") == []


def test_moves_and_their_audit_records_commit_together_or_not_at_all(
    store: Store, settings: Settings
) -> None:
    """A transaction that fails after applying a re-plan leaves every task where it was."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200)
        add_order(tx, "o2", "t2", promised_by=T0 + 7200, start_after=T0 + 600)
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
    now = T0 + 10
    with store.read() as reader:
        inputs = read_inputs(reader, now=now, after_audit_seq=0)
    plan = plan_replan(inputs, PlanningState().prep_model(), ReplanSettings(UNREACHABLE_S))
    with pytest.raises(RuntimeError), store.write() as tx:
        applied = apply_replan(tx, inputs, plan, now=now)
        assert len(applied.moved) == 2
        raise RuntimeError("crash before commit")
    with store.read() as reader:
        kitchens = [reader.task(t)["kitchen_id"] for t in ("t1", "t2")]  # type: ignore[index]
    assert kitchens == ["k1", "k1"]
    assert actions(store, "task.replanned") == []


def test_paused_kitchen_work_moves_and_the_kitchen_takes_no_new_work(
    store: Store, settings: Settings
) -> None:
    """A paused kitchen's queued task moves with reason ``kitchen_unavailable`` and its
    backpressure decision refuses new work."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200)
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
    clock = Clock(T0 + 10)
    loop, planning = loop_of(store, settings, clock)
    report = loop.tick()
    for n in range(3):
        clock.now = T0 + 11 + n
        loop.tick()
    (record,) = actions(store, "task.replanned")
    decision = planning.decisions()["k1"]
    assert report.replanned == ("t1",)
    assert record["reason"] == "kitchen_unavailable"
    assert decision.level == "pause" and not decision.actions.accept_new_work


def test_a_resumed_kitchen_takes_work_again_at_once_and_a_paused_one_does_not_load_the_fleet(
    tmp_path: Path, store: Store
) -> None:
    """Pausing k1 pauses k1 only (the fleet is k2); resuming it drops its level to normal at the
    next tick, without waiting out the dwell time, and that change is audited."""
    settings = Settings(db_path=tmp_path / "cp.db", backpressure_min_dwell_s=600)
    with store.write() as tx:
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
    clock = Clock(T0)
    loop, planning = loop_of(store, settings, clock)
    for n in range(3):
        clock.now = T0 + n
        loop.tick()
    paused, fleet = planning.decisions()["k1"].level, planning.decisions()["*"].level
    with store.write() as tx:
        tx.set_kitchen_status(kitchen_id="k1", status="active")
    clock.now = T0 + 10
    loop.tick()
    resumed = planning.decisions()["k1"]
    last_change = actions(store, "backpressure.level_changed")[-1]
    assert (paused, fleet) == ("pause", "normal")
    assert resumed.level == "normal"
    assert last_change["subject_id"] == "k1" and last_change["details"]["to"] == "normal"
    assert str(last_change["reason"]).startswith("kitchen reopened")


def test_prep_times_view_shows_learned_shared_and_nominal_estimates_with_their_error(
    store: Store, settings: Settings
) -> None:
    """After k1's completions, k1 x burger is learned there, k2 x burger falls back to what
    k1 taught (``sku``), and the error of each completion was scored before it was learned."""
    with store.write() as tx:
        for n in range(5):
            add_order(tx, f"o{n}", f"t{n}", promised_by=T0 + 7200)
    for n in range(5):
        complete(store, f"t{n}", started_at=T0 + n * 1000, finished_at=T0 + n * 1000 + 480)
    loop, planning = loop_of(store, settings, Clock(T0 + 10_000))
    loop.tick()
    with store.read() as reader:
        view = prep_times_view(reader, planning.prep_model())
    by_kitchen = {s["kitchen_id"]: s for s in view["series"]}
    assert (by_kitchen["k1"]["source"], by_kitchen["k1"]["p50_s"]) == ("kitchen_sku", 480.0)
    assert (by_kitchen["k2"]["source"], by_kitchen["k2"]["p50_s"]) == ("sku", 480.0)
    assert by_kitchen["k1"]["error"]["count"] == 5
    assert by_kitchen["k1"]["error"]["bias_s"] < 0  # faster than the recipe's 600 s
    assert view["error"]["count"] == 5


def test_an_order_late_at_a_kitchen_without_an_agent_is_late_for_its_queue_not_stranded(
    store: Store, settings: Settings
) -> None:
    """A kitchen no agent ever synced from is not partitioned: its late order's cause is its
    queue."""
    with store.write() as tx:
        tx.insert_kitchen(
            kitchen_id="k3",
            name="k3",
            timezone="UTC",
            location=None,
            status="active",
            created_at=T0,
        )
        tx.insert_station(kitchen_id="k3", station_id="grill", name="Grill", slots=1)
        add_order(tx, "o-first", "t-a", kitchen_id="k3", promised_by=T0 + 1200)
        add_order(tx, "o-late", "t-b", kitchen_id="k3", promised_by=T0 + 900)
    loop, planning = loop_of(store, settings, Clock(T0))
    loop.tick()
    prediction = planning.prediction("o-late")
    assert prediction is not None and prediction.margin_s < 0
    assert prediction.cause == "queue"


def test_replanning_runs_when_its_inputs_change_and_retries_unplaced_work_at_an_interval(
    store: Store, settings: Settings
) -> None:
    """With both kitchens paused the task has nowhere to go (flagged once); the loop does not
    re-plan every tick, retries after ``replan_interval_s``, and moves the task at once when k2
    is resumed."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200, start_after=T0 + 3000)
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
        tx.set_kitchen_status(kitchen_id="k2", status="paused")
    clock = Clock(T0)
    loop, _ = loop_of(store, settings, clock)
    first = loop.tick()
    clock.now = T0 + 1
    quiet = loop.tick()
    clock.now = T0 + settings.replan_interval_s + 1
    retry = loop.tick()
    with store.write() as tx:
        tx.set_kitchen_status(kitchen_id="k2", status="active")
    clock.now += 1
    resumed = loop.tick()
    assert (first.replan_ran, first.flagged) == (True, (("t1", "no_feasible_kitchen"),))
    assert (quiet.replan_ran, retry.replan_ran, retry.flagged) == (False, True, ())
    assert (resumed.replan_ran, resumed.replanned) == (True, ("t1",))
    assert len(actions(store, "task.unplaceable")) == 1


def test_a_kitchen_whose_only_equipment_comes_online_takes_work_at_once(
    store: Store, settings: Settings
) -> None:
    """k1's only oven has not reported in: k1 pauses (no capacity) but, with nothing to do, does
    not load the fleet; when the oven comes online k1 is back to normal at the next tick."""
    with store.write() as tx:
        tx.upsert_equipment(
            kitchen_id="k1",
            equipment_id="oven-1",
            kind="oven",
            station_id="grill",
            health="offline",
            updated_at=T0,
        )
    clock = Clock(T0)
    slow = Settings(db_path=settings.db_path, backpressure_min_dwell_s=600)
    loop, planning = loop_of(store, slow, clock)
    for n in range(3):
        clock.now = T0 + n
        heartbeat(store, "k1", clock.now)
        loop.tick()
    closed, fleet = planning.decisions()["k1"], planning.decisions()["*"]
    with store.write() as tx:
        tx.upsert_equipment(
            kitchen_id="k1",
            equipment_id="oven-1",
            kind=None,
            station_id=None,
            health="ok",
            updated_at=T0 + 3,
        )
    clock.now = T0 + 4
    heartbeat(store, "k1", clock.now)
    loop.tick()
    assert (closed.level, fleet.level) == ("pause", "normal")
    assert planning.decisions()["k1"].level == "normal"


def test_only_one_loop_per_store_leads_and_another_takes_over_when_it_stops(
    store: Store, settings: Settings
) -> None:
    """Two loops on one store (as two processes would be): the first to take the store's
    control-loop lock leads, the other stands by; once the leader stops, the other leads."""
    first, _ = loop_of(store, settings, Clock())
    second, _ = loop_of(store, settings, Clock())
    assert first.lead()
    assert not second.lead()
    first.start()
    first.stop()
    assert second.lead()
    assert not first.lead()
    assert LoopLock.beside(settings.db_path).path.read_text().strip() == str(os.getpid())


def test_a_loop_stands_by_while_another_process_holds_the_lock(
    store: Store, settings: Settings
) -> None:
    """Another process holding ``<db>.control-loop.lock`` keeps this loop from leading until
    it exits (the kernel drops its lock)."""
    lock_path = LoopLock.beside(settings.db_path).path
    script = (
        "import fcntl, sys\n"
        f"f = open({str(lock_path)!r}, 'a')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    loop, _ = loop_of(store, settings, Clock())
    # Leaving the block closes its stdin: the holder exits, and its lock goes with it.
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert not loop.lead()
    assert loop.lead()


def test_a_released_task_whose_slot_still_fits_is_moved_at_most_once_over_ticks(
    store: Store, settings: Settings
) -> None:
    """k1 lost its only oven (a station the burger does not use), so its work is re-planned
    each time its inputs change; a task its agent leased and released keeps its grill slot and
    is not moved (or re-audited) tick after tick."""
    with store.write() as tx:
        tx.insert_station(kitchen_id="k1", station_id="oven", name="Oven", slots=1)
        tx.upsert_equipment(
            kitchen_id="k1",
            equipment_id="oven-1",
            kind="oven",
            station_id="oven",
            health="failed",
            updated_at=T0,
        )
        add_order(tx, "o1", "t1", promised_by=T0 + 7200, start_after=T0 + 600)
        tx.lease_task(
            task_id="t1", agent_id="agent-k1", fencing_token=1, leased_at=T0, start_by=T0 + 900
        )
        tx.release_task(task_id="t1", at=T0 + 1)
    clock = Clock(T0 + 10)
    loop, _ = loop_of(store, settings, clock)
    reports = []
    for n in range(3):
        clock.now = T0 + 10 + n
        reports.append(loop.tick())
    with store.read() as reader:
        task = reader.task("t1")
    assert reports[0].replan_ran
    assert len(actions(store, "task.replanned")) <= 1
    assert task is not None and task["fencing_token"] <= 2 and task["kitchen_id"] == "k1"


def test_a_leased_task_on_a_paused_kitchen_is_never_moved_by_the_loop(
    store: Store, settings: Settings
) -> None:
    """Its start-by passed and its kitchen synced since with an empty outbox, but the holder
    may have started it offline: the loop leaves it (the sync path reclaims expired leases)."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200)
        tx.lease_task(
            task_id="t1", agent_id="agent-k1", fencing_token=1, leased_at=T0 - 120, start_by=T0 - 60
        )
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
    clock = Clock(T0 + 10)
    heartbeat(store, "k1", clock.now)
    heartbeat(store, "k2", clock.now)
    loop, _ = loop_of(store, settings, clock)
    report = loop.tick()
    with store.read() as reader:
        task = reader.task("t1")
    assert report.replanned == ()
    assert task is not None and (task["kitchen_id"], task["state"]) == ("k1", "leased")
    assert task["fencing_token"] == 1
    assert actions(store, "task.replanned") == []


def test_a_move_into_a_slot_intake_booked_since_the_read_is_not_applied(
    store: Store, settings: Settings
) -> None:
    """The tick plans t1 from paused k1 onto k2's only grill slot; intake books that slot
    before the write: the move is skipped, t1 stays at k1 and the next tick decides again."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200)
        tx.set_kitchen_status(kitchen_id="k1", status="paused")
    now = T0 + 10
    with store.read() as reader:
        inputs = read_inputs(reader, now=now, after_audit_seq=0)
    plan = plan_replan(inputs, PlanningState().prep_model(), ReplanSettings(UNREACHABLE_S))
    assert plan is not None
    (move,) = plan.result.moves
    assert (move.to_kitchen_id, move.station_id) == ("k2", "grill")
    with store.write() as tx:
        tx.insert_planned_task(
            task_id="intake-1",
            kitchen_id="k2",
            station_id="grill",
            sku_id="burger",
            quantity=1,
            duration_s=600.0,
            start_after=move.planned_start - 100,
            planned_finish=move.planned_start + 100,
            finish_by=T0 + 7200,
            predicted_ready_at=move.planned_start + 100,
            created_at=now,
        )
    with store.write() as tx:
        applied = apply_replan(tx, inputs, plan, now=now)
    with store.read() as reader:
        task = reader.task("t1")
    assert applied.moved == () and applied.skipped == ("t1",)
    assert task is not None and (task["kitchen_id"], task["fencing_token"]) == ("k1", 0)
    assert actions(store, "task.replanned") == []


def test_reading_flagged_tasks_uses_the_partial_index(store: Store) -> None:
    """The loop's per-tick read of flagged tasks does not scan every task."""
    with store.read() as reader:
        plan = reader._conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM prep_tasks WHERE flag_reason IS NOT NULL ORDER BY id"
        ).fetchall()
    details = " ".join(str(row[3]) for row in plan)
    assert "USING INDEX prep_tasks_flagged" in details


def test_a_task_finished_since_the_read_is_not_flagged(store: Store, settings: Settings) -> None:
    """The tick reads k1's leased task while k1 is unreachable; the task finishes before the
    write: it is not flagged stranded (nor audited so)."""
    with store.write() as tx:
        add_order(tx, "o1", "t1", promised_by=T0 + 7200)
        tx.lease_task(
            task_id="t1", agent_id="agent-k1", fencing_token=1, leased_at=T0, start_by=T0 + 3600
        )
    now = T0 + UNREACHABLE_S + 30
    with store.read() as reader:
        inputs = read_inputs(reader, now=now, after_audit_seq=0)
    plan = plan_replan(inputs, PlanningState().prep_model(), ReplanSettings(UNREACHABLE_S))
    assert plan is not None and plan.flags == {"t1": "stranded_unreachable"}
    with store.write() as tx:
        tx.set_task_started(task_id="t1", started_at=T0 + 10, at=now)
        tx.set_task_finished(
            task_id="t1", state="done", finished_at=T0 + 600, failure_reason=None, at=now
        )
    with store.write() as tx:
        applied = apply_replan(tx, inputs, plan, now=now)
    with store.read() as reader:
        task = reader.task("t1")
    assert applied.flagged == ()
    assert task is not None and task["flag_reason"] is None
    assert actions(store, "task.stranded") == []


def test_a_cleared_flag_is_audited_once(store: Store, settings: Settings) -> None:
    """A stranded flag cleared when the kitchen is heard again leaves a ``task.flag_cleared``
    audit record naming the flag it cleared."""
    with store.write() as tx:
        add_order(tx, "o2", "t-leased", promised_by=T0 + 7200)
        tx.lease_task(
            task_id="t-leased",
            agent_id="agent-k1",
            fencing_token=1,
            leased_at=T0,
            start_by=T0 + 3600,
        )
    clock = Clock(T0 + UNREACHABLE_S + 30)
    loop, _ = loop_of(store, settings, clock)
    loop.tick()
    heartbeat(store, "k1", clock.now)
    heartbeat(store, "k2", clock.now)
    clock.now += 1
    loop.tick()
    clock.now += 1
    loop.tick()
    (cleared,) = actions(store, "task.flag_cleared")
    assert (cleared["subject_id"], cleared["reason"], cleared["order_id"]) == (
        "t-leased",
        "stranded_unreachable",
        "o2",
    )


def test_a_kitchens_contact_is_read_from_its_unrevoked_agents_in_one_query(
    store: Store, settings: Settings
) -> None:
    """last_sync_at is its agents' newest sync, outbox_depth their sum, and the ingestion lag
    the age of the newest event of an agent reporting a backlog (its last sync without any)."""
    with store.write() as tx:
        for agent_id, seen, depth, revoked in (
            ("agent-k1b", T0 + 5, 3, False),  # newest sync, a backlog, events below
            ("agent-k1c", T0 + 9, 2, True),  # revoked: not heard from, whatever it says
        ):
            tx.insert_agent(
                agent_id=agent_id,
                kitchen_id="k1",
                name="box",
                credential_hash=f"hash-{agent_id}",
                agent_version="1",
                enrolled_at=T0,
            )
            tx.record_heartbeat(
                agent_id=agent_id,
                last_seen_at=seen,
                clock_offset_s=0.0,
                clock_offset_measured_at=seen,
                clock_samples=1,
                agent_version="1",
                outbox_depth=depth,
                reconnect_json=None,
            )
            tx.set_agent_revoked(agent_id=agent_id, revoked=revoked, at=T0)
        for seq, occurred in ((1, T0 - 50), (2, T0 - 40)):
            tx.insert_event_rows(
                rows=[("agent-k1b", seq, f"e{seq}", "readings.summary", 0, occurred, T0, "{}", "")]
            )
        tx.record_heartbeat(
            agent_id="agent-k2",
            last_seen_at=T0 + 1,
            clock_offset_s=0.0,
            clock_offset_measured_at=T0,
            clock_samples=1,
            agent_version="1",
            outbox_depth=1,
            reconnect_json=None,
        )
    with store.read() as reader:
        inputs = read_inputs(reader, now=T0 + 20, after_audit_seq=0)
        later = read_inputs(reader, now=T0 - 100, after_audit_seq=0)
    kitchens = {k.kitchen_id: k for k in inputs.kitchens}
    assert (kitchens["k1"].last_sync_at, kitchens["k1"].outbox_depth) == (T0 + 5, 3)
    assert (kitchens["k2"].last_sync_at, kitchens["k2"].outbox_depth) == (T0 + 1, 1)
    # k1: its newest event (seq 2) happened 60 s ago; k2's agent sent none: its last sync.
    assert dict(inputs.ingestion_lag_s) == {"k1": 60.0, "k2": 19.0}
    assert dict(later.ingestion_lag_s) == {"k1": 0.0, "k2": 0.0}


def test_a_backpressure_gauge_follows_its_scopes_level(store: Store, settings: Settings) -> None:
    """The level gauge of a scope is published on the first tick and again when it moves."""
    metrics = Metrics()
    loop = ControlLoop(
        store=store, settings=settings, metrics=metrics, planning=PlanningState(), clock=Clock()
    )

    def level(scope: str) -> float | None:
        return metrics.loop_registry.get_sample_value(
            "brigade_backpressure_level", {"scope": scope}
        )

    loop.tick()
    assert level("k1") == 0.0
    backpressure_overrides.set_override(
        store, "k1", level="shed", reason="drill", until=None, now=T0, actor="ops"
    )
    loop.tick()
    assert level("k1") == 2.0
    loop.tick()
    assert level("k1") == 2.0


def test_a_tick_runs_without_the_cyclic_collector_and_restores_it(
    store: Store, settings: Settings
) -> None:
    """While a tick runs the cyclic GC is off (no stop-the-world pauses for the request
    threads); afterwards it is as it was, on or off."""
    seen: list[bool] = []

    def clock() -> float:
        seen.append(gc.isenabled())
        return T0

    loop = ControlLoop(
        store=store, settings=settings, metrics=Metrics(), planning=PlanningState(), clock=clock
    )
    assert gc.isenabled()
    loop.tick()
    assert gc.isenabled()
    gc.disable()
    try:
        loop.tick()
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert seen and not any(seen)


def test_the_collector_runs_while_a_tick_writes(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause covers computing, not a write that may wait on the store's lock: during the
    write the collector is on (if it was before the tick), and off again after it."""
    backpressure_overrides.set_override(
        store, "k1", level="shed", reason="drill", until=None, now=T0, actor="ops"
    )
    writing: list[bool] = []
    write = store.write

    def watched_write() -> Any:
        writing.append(gc.isenabled())
        return write()

    monkeypatch.setattr(store, "write", watched_write)
    loop = ControlLoop(
        store=store,
        settings=settings,
        metrics=Metrics(),
        planning=PlanningState(),
        clock=lambda: T0,
    )
    assert loop.tick().wrote
    assert writing == [True]
    assert gc.isenabled()


def test_a_steady_scopes_published_decision_is_the_same_object_tick_after_tick(
    store: Store, settings: Settings
) -> None:
    """An unchanged decision is not replaced by an equal copy; a changed one is."""
    clock = Clock(T0)
    loop, planning = loop_of(store, settings, clock)
    loop.tick()
    first = planning.decisions()
    clock.now += 1
    loop.tick()
    second = planning.decisions()
    assert second["k1"] is first["k1"] and second["*"] is first["*"]
    backpressure_overrides.set_override(
        store, "k1", level="throttle", reason="drill", until=None, now=clock.now, actor="ops"
    )
    loop.tick()
    assert planning.decisions()["k1"].level == "throttle"
    assert planning.decisions()["k2"] is first["k2"]


_SIGNALS = st.builds(
    Signals,
    queue_work_s=st.sampled_from([0.0, 100.0, 3000.0, 5000.0, 9000.0]),
    capacity_s=st.sampled_from([0.0, 2000.0, 3600.0]),
    at_risk_fraction=st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.9]),
    capacity_lost_fraction=st.sampled_from([0.0, 0.3, 0.34, 1.0]),
    ingestion_lag_s=st.sampled_from([0.0, 14.9, 29.99, 30.0, 200.0, float("nan")]),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    signals=st.dictionaries(st.sampled_from(["*", "k1", "k2", "k3", "k4"]), _SIGNALS),
    levels=st.dictionaries(
        st.sampled_from(["*", "k1", "k2", "k3"]),
        st.tuples(st.integers(0, 3), st.sampled_from([-1e9, 990.0, 1000.0])),
    ),
    overridden=st.dictionaries(
        st.sampled_from(["k1", "k4"]),
        st.tuples(st.sampled_from(["normal", "shed"]), st.sampled_from([None, 999.0, 2000.0])),
    ),
)
def test_levels_stepped_past_quiet_scopes_are_what_the_core_decides(
    signals: dict[str, Signals],
    levels: dict[str, tuple[int, float]],
    overridden: dict[str, tuple[str, float | None]],
) -> None:
    """Skipping the core for quiet scopes at normal changes no decision and no state."""
    state = BackpressureState({k: ScopeState(level, since) for k, (level, since) in levels.items()})
    overrides = {
        k: Override(level=level, actor="ops", reason="drill", until=until)
        for k, (level, until) in overridden.items()
    }
    bp = BackpressureSettings(min_dwell_s=30.0)
    expected = step(state, 1000.0, signals, overrides, bp)
    assert _step_levels(state, 1000.0, signals, overrides, bp) == expected
