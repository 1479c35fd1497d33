"""The prep-task state machine (pure): starts, retries, restarts, deadlines, manual steps."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.executor import (
    Decision,
    ExecutorSettings,
    Inputs,
    LeaseRecord,
    RunState,
    StaffConfirmation,
    StepPhase,
    TaskRun,
    decide,
)
from protocol import Ack, AckResult, Lease, RecipeStep, command_id_for

WALL = 1_767_225_600.0
SETTINGS = ExecutorSettings(ack_wait_s=5.0, step_margin_s=10.0, manual_margin_s=30.0)
OVENS: dict[str, tuple[str, ...]] = {"oven": ("oven-1",)}


def make_lease(*steps: RecipeStep, task_id: str = "t1", quantity: int = 3) -> Lease:
    return Lease(
        task_id=task_id,
        kitchen_id="k1",
        station_id="s1",
        sku_id="pie",
        sku_name="Pie",
        quantity=quantity,
        order_ids=["o1"],
        steps=list(steps)
        or [RecipeStep(index=0, name="bake", equipment_kind="oven", setpoint_c=180, duration_s=60)],
        fencing_token=7,
        start_after=0,
        finish_by=WALL + 3600,
        start_by=WALL + 600,
        start_within_s=600,
    )


def two_step_lease() -> Lease:
    return make_lease(
        RecipeStep(index=0, name="bake", equipment_kind="oven", setpoint_c=180, duration_s=60),
        RecipeStep(index=1, name="box", manual=True, duration_s=30),
    )


def at(now: float, **kwargs: object) -> Inputs:
    return Inputs(now=now, wall=WALL + now, **kwargs)  # type: ignore[arg-type]


def ack(command_id: str, result: AckResult, **data: float) -> Ack:
    return Ack(command_id=command_id, device_id="oven-1", result=result, ts=WALL, data=data)


def start(lease: Lease, deadline: float = 100.0) -> tuple[Decision, LeaseRecord]:
    record = LeaseRecord(lease=lease, start_deadline=deadline)
    return decide(TaskRun.new(lease), record, at(1.0, free_devices=OVENS), SETTINGS), record


def test_starting_a_task_records_task_started_and_sends_the_first_command() -> None:
    """The start decision carries task.started, step_started and command t1.s0.a1 together."""
    decision, _ = start(make_lease())
    assert [e.type for e in decision.events] == ["task.started", "task.step_started"]
    assert decision.run.state == RunState.STARTED and decision.run.started
    assert decision.command is not None
    assert decision.command.device_id == "oven-1"
    assert decision.command.command.command_id == command_id_for("t1", 0, 1)
    assert decision.command.command.params == {"duration_s": 60.0, "setpoint_c": 180.0}


def test_an_unstarted_lease_past_its_start_by_deadline_is_released() -> None:
    """At or after the monotonic deadline a never-started task is released, not started."""
    lease = make_lease()
    record = LeaseRecord(lease=lease, start_deadline=50.0)
    decision = decide(TaskRun.new(lease), record, at(50.0, free_devices=OVENS), SETTINGS)
    assert decision.command is None
    assert decision.run.state == RunState.RELEASED
    assert [(e.type, e.payload["reason"]) for e in decision.events] == [
        ("task.released", "start_by_expired")
    ]


def test_a_lease_whose_deadline_cannot_be_proven_is_released() -> None:
    """After a reboot the deadline is unknown (None): the task is released, never started."""
    lease = make_lease()
    record = LeaseRecord(lease=lease, start_deadline=None)
    decision = decide(TaskRun.new(lease), record, at(0.0, free_devices=OVENS), SETTINGS)
    assert decision.run.state == RunState.RELEASED
    assert decision.command is None


def test_without_a_free_device_the_task_waits_and_wakes_before_the_deadline() -> None:
    """No oven online: nothing recorded, wake-up no later than the start-by deadline."""
    lease = make_lease()
    record = LeaseRecord(lease=lease, start_deadline=1.5)
    decision = decide(TaskRun.new(lease), record, at(1.0), SETTINGS)
    assert decision.events == () and decision.command is None
    assert decision.wake_at == 1.5


def test_a_task_is_not_started_before_its_start_after_time() -> None:
    """``not_before`` (start_after on the monotonic clock) holds the start back."""
    lease = make_lease()
    record = LeaseRecord(lease=lease, start_deadline=100.0, not_before=20.0)
    decision = decide(TaskRun.new(lease), record, at(10.0, free_devices=OVENS), SETTINGS)
    assert decision.events == () and decision.wake_at == 20.0


def test_after_a_restart_the_same_command_id_is_resent_without_new_events() -> None:
    """A persisted commanded step (timer lost) re-sends the identical command, records nothing."""
    first, record = start(make_lease())
    restarted = replace(first.run, deadline=None)
    decision = decide(restarted, record, at(500.0, free_devices=OVENS), SETTINGS)
    assert decision.events == ()
    assert decision.command is not None and first.command is not None
    assert decision.command.command == first.command.command


def test_an_unanswered_command_is_resent_under_the_same_id() -> None:
    """No ack within ack_wait_s: the same command id goes out again."""
    first, record = start(make_lease())
    decision = decide(first.run, record, at(6.5, free_devices=OVENS), SETTINGS)
    assert decision.command is not None
    assert decision.command.command.command_id == "t1.s0.a1"
    assert decision.run.resends == 1


def test_a_device_that_never_answers_fails_the_started_task() -> None:
    """After max_resends re-sends without an ack the task fails as device_unresponsive."""
    decision, record = start(make_lease())
    now = 1.0
    for _ in range(SETTINGS.max_resends + 1):
        now += SETTINGS.ack_wait_s + 0.1
        decision = decide(decision.run, record, at(now, free_devices=OVENS), SETTINGS)
    assert decision.run.state == RunState.FAILED
    assert decision.events[0].payload == {
        "task_id": "t1",
        "fencing_token": 7,
        "reason": "device_unresponsive",
        "started": True,
    }


def test_accepted_ack_extends_the_wait_to_the_cook_duration() -> None:
    """After ``accepted`` the agent waits duration + margin before re-sending."""
    first, record = start(make_lease())
    accepted = decide(first.run, record, at(2.0, ack=ack("t1.s0.a1", AckResult.ACCEPTED)), SETTINGS)
    assert accepted.run.phase == StepPhase.ACCEPTED
    assert accepted.wake_at == 2.0 + 60 + SETTINGS.step_margin_s
    quiet = decide(accepted.run, record, at(30.0), SETTINGS)
    assert quiet.command is None and quiet.events == ()


def test_a_device_still_answering_accepted_is_polled_not_failed() -> None:
    """Past duration + margin the same id is re-sent; a re-sent ``accepted`` resets the count."""
    first, record = start(make_lease())
    accepted = ack("t1.s0.a1", AckResult.ACCEPTED)
    decision = decide(first.run, record, at(2.0, ack=accepted), SETTINGS)
    now = 2.0
    for _ in range(3 * SETTINGS.max_resends):
        now = (decision.wake_at or now) + 0.1
        polled = decide(decision.run, record, at(now), SETTINGS)
        assert polled.command is not None
        assert polled.command.command.command_id == "t1.s0.a1"
        decision = decide(polled.run, record, at(now + 0.1, ack=accepted), SETTINGS)
        assert decision.run.resends == 0 and decision.run.state == RunState.STARTED
    assert decision.wake_at == now + 0.1 + SETTINGS.progress_poll_s


def test_a_rejected_command_is_retried_under_the_next_attempt_id() -> None:
    """``rejected`` means the device did nothing: attempt 2 gets a new, derived id."""
    first, record = start(make_lease())
    retry = decide(
        first.run,
        record,
        at(2.0, free_devices=OVENS, ack=ack("t1.s0.a1", AckResult.REJECTED)),
        SETTINGS,
    )
    assert retry.command is not None
    assert retry.command.command.command_id == "t1.s0.a2"
    assert [e.type for e in retry.events] == ["task.step_started"]


def test_repeated_rejections_fail_the_task_with_the_reason() -> None:
    """After max_attempts rejections the task fails with step_rejected."""
    decision, record = start(make_lease())
    for attempt in range(1, SETTINGS.max_attempts + 1):
        rejected = ack(command_id_for("t1", 0, attempt), AckResult.REJECTED)
        decision = decide(decision.run, record, at(2.0, free_devices=OVENS, ack=rejected), SETTINGS)
    assert decision.run.state == RunState.FAILED
    assert decision.events[0].payload["reason"] == "step_rejected"


def refusal(command_id: str, reason: str, device_id: str = "oven-1") -> Ack:
    return Ack(
        command_id=command_id,
        device_id=device_id,
        result=AckResult.REJECTED,
        ts=WALL,
        reason=reason,
    )


def test_silence_while_the_broker_is_down_neither_counts_nor_fails() -> None:
    """A broker outage longer than max_resends * ack_wait_s: no re-send, no count, no failure."""
    first, record = start(make_lease())
    accepted = decide(first.run, record, at(2.0, ack=ack("t1.s0.a1", AckResult.ACCEPTED)), SETTINGS)
    decision, now = accepted, 2.0
    for _ in range(3 * SETTINGS.max_resends):
        now = (decision.wake_at or now) + 0.1
        decision = decide(decision.run, record, at(now, link_up=False), SETTINGS)
        assert decision.command is None and decision.run.state == RunState.STARTED
    assert decision.run.resends == 0
    back = decide(decision.run, record, at((decision.wake_at or now) + 0.1), SETTINGS)
    assert back.command is not None and back.command.command.command_id == "t1.s0.a1"
    assert back.run.resends == 1


def test_silence_while_the_device_is_offline_neither_counts_nor_fails() -> None:
    """The commanded device offline (broker up): the deadline moves on, re-sends uncounted."""
    decision, record = start(make_lease())
    now = 1.0
    for _ in range(3 * SETTINGS.max_resends):
        now = (decision.wake_at or now) + 0.1
        decision = decide(decision.run, record, at(now, online=frozenset()), SETTINGS)
        assert decision.command is None and decision.run.state == RunState.STARTED
    assert decision.run.resends == 0


def test_busy_refusals_back_off_without_using_up_attempts() -> None:
    """``busy`` is not a failure: many in a row, growing waits, then the step still runs."""
    decision, record = start(make_lease())
    now, waits = 1.0, []
    for _ in range(2 * SETTINGS.max_attempts):
        busy = refusal(decision.run.command_id or "", "busy: running x.s0.a1")
        waiting = decide(decision.run, record, at(now, free_devices=OVENS, ack=busy), SETTINGS)
        assert waiting.run.state == RunState.STARTED and waiting.command is None
        assert waiting.wake_at is not None
        waits.append(waiting.wake_at - now)
        early = decide(waiting.run, record, at(now + 0.01, free_devices=OVENS), SETTINGS)
        assert early.command is None
        now = waiting.wake_at
        decision = decide(waiting.run, record, at(now, free_devices=OVENS), SETTINGS)
        assert decision.command is not None and decision.command.device_id == "oven-1"
    assert waits == sorted(waits) and waits[-1] > waits[0]
    # Real refusals still fail the step after max_attempts of them.
    for _ in range(SETTINGS.max_attempts):
        real = refusal(decision.run.command_id or "", "invalid_params: setpoint_c")
        decision = decide(decision.run, record, at(now, free_devices=OVENS, ack=real), SETTINGS)
    assert decision.run.state == RunState.FAILED


def test_a_busy_device_is_skipped_for_another_free_one_of_the_kind() -> None:
    """``busy`` with a second oven free: the next attempt goes to that oven at once."""
    decision, record = start(make_lease())
    two = {"oven": ("oven-1", "oven-2")}
    busy = refusal("t1.s0.a1", "busy: running x.s0.a1")
    moved = decide(decision.run, record, at(2.0, free_devices=two, ack=busy), SETTINGS)
    assert moved.command is not None and moved.command.device_id == "oven-2"
    assert moved.command.command.command_id == "t1.s0.a2"


def test_after_a_device_fault_the_next_attempt_prefers_another_oven() -> None:
    """``element_fault`` or ``expired`` on oven-1: attempt 2 goes to oven-2 when it is free."""
    two = {"oven": ("oven-1", "oven-2")}
    for answer in (refusal("t1.s0.a1", "element_fault"), ack("t1.s0.a1", AckResult.EXPIRED)):
        decision, record = start(make_lease())
        retry = decide(decision.run, record, at(2.0, free_devices=two, ack=answer), SETTINGS)
        assert retry.command is not None and retry.command.device_id == "oven-2"
        alone = decide(decision.run, record, at(2.0, free_devices=OVENS, ack=answer), SETTINGS)
        assert alone.command is not None and alone.command.device_id == "oven-1"


def test_an_ack_for_another_command_changes_nothing() -> None:
    """A stray ack (other task, old attempt) is ignored."""
    first, record = start(make_lease())
    decision = decide(first.run, record, at(2.0, ack=ack("t9.s0.a1", AckResult.DONE)), SETTINGS)
    assert decision.run == first.run and decision.events == ()


def test_done_on_the_last_step_records_step_done_and_task_done_with_quantity() -> None:
    """``done`` carries the core temperature into step_done, then task.done with quantity."""
    first, record = start(make_lease(quantity=4))
    done = decide(
        first.run, record, at(70.0, ack=ack("t1.s0.a1", AckResult.DONE, core_temp_c=75.5)), SETTINGS
    )
    assert [e.type for e in done.events] == ["task.step_done", "task.done"]
    assert done.events[0].payload["core_temp_c"] == 75.5
    assert done.events[1].payload == {"task_id": "t1", "fencing_token": 7, "quantity": 4}
    assert done.run.state == RunState.DONE


def test_a_manual_step_is_announced_and_done_when_staff_confirm_with_a_badge() -> None:
    """After the oven step, the manual step waits for step_confirmed and records the badge."""
    first, record = start(two_step_lease())
    oven_done = decide(first.run, record, at(70.0, ack=ack("t1.s0.a1", AckResult.DONE)), SETTINGS)
    assert [e.type for e in oven_done.events] == ["task.step_done", "task.step_started"]
    assert oven_done.run.phase == StepPhase.AWAITING_STAFF and oven_done.command is None
    confirmed = decide(
        oven_done.run,
        record,
        at(80.0, confirmation=StaffConfirmation(task_id="t1", step=1, badge="badge-42")),
        SETTINGS,
    )
    assert [e.type for e in confirmed.events] == ["task.step_done", "task.done"]
    assert confirmed.events[0].payload["staff_badge"] == "badge-42"


def test_an_unconfirmed_manual_step_fails_after_its_timeout() -> None:
    """No badge within duration + manual margin: task.failed manual_step_timeout."""
    lease = make_lease(RecipeStep(index=0, name="plate", manual=True, duration_s=30))
    decision, record = start(lease)
    late = decide(decision.run, record, at(1.0 + 30 + SETTINGS.manual_margin_s), SETTINGS)
    assert late.run.state == RunState.FAILED
    assert late.events[0].payload["reason"] == "manual_step_timeout"


def test_a_persisted_step_index_past_the_recipe_fails_the_task() -> None:
    """Corrupt state is not guessed at: the task fails with invalid_step_index."""
    first, record = start(make_lease())
    decision = decide(replace(first.run, step=5), record, at(2.0), SETTINGS)
    assert decision.run.state == RunState.FAILED
    assert decision.events[0].payload["reason"] == "invalid_step_index"


# -- properties -------------------------------------------------------------------------------

Action = tuple[str, float, int]
actions = st.lists(
    st.tuples(
        st.sampled_from(["tick", "ack_current", "ack_stale", "restart", "devices", "confirm"]),
        st.floats(min_value=0.0, max_value=40.0),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=60,
)
RESULTS = [AckResult.ACCEPTED, AckResult.DONE, AckResult.REJECTED, AckResult.EXPIRED]


def run_scenario(script: list[Action], deadline: float) -> list[tuple[float, Ack | None, Decision]]:
    """Drive one task through ``script``; returns every (now, ack given, decision)."""
    lease = two_step_lease()
    record = LeaseRecord(lease=lease, start_deadline=deadline)
    run = TaskRun.new(lease)
    now = 0.0
    devices: dict[str, tuple[str, ...]] = OVENS
    history: list[tuple[float, Ack | None, Decision]] = []
    for kind, dt, pick in script:
        now += dt
        inbound_ack = None
        confirmation = None
        if kind == "restart":
            # Only the persisted fields survive: the in-memory timer is lost.
            run = replace(run, deadline=None)
        elif kind == "devices":
            devices = OVENS if pick % 2 else {}
        elif kind in ("ack_current", "ack_stale") and run.command_id is not None:
            command_id = run.command_id if kind == "ack_current" else "t1.s0.a99"
            inbound_ack = ack(command_id, RESULTS[pick])
        elif kind == "confirm":
            confirmation = StaffConfirmation(task_id="t1", step=run.step, badge="b-1")
        decision = decide(
            run,
            record,
            at(now, free_devices=devices, ack=inbound_ack, confirmation=confirmation),
            SETTINGS,
        )
        history.append((now, inbound_ack, decision))
        run = decision.run
    return history


@settings(max_examples=300, deadline=None)
@given(script=actions, deadline=st.floats(min_value=0.0, max_value=200.0))
def test_a_task_is_started_at_most_once_and_never_after_its_deadline(
    script: list[Action], deadline: float
) -> None:
    """Whatever happens, task.started is recorded at most once, and only before the deadline."""
    starts = [
        now
        for now, _, decision in run_scenario(script, deadline)
        for event in decision.events
        if event.type == "task.started"
    ]
    assert len(starts) <= 1
    assert all(now < deadline for now in starts)


@settings(max_examples=300, deadline=None)
@given(script=actions, deadline=st.floats(min_value=0.0, max_value=200.0))
def test_commands_follow_the_start_and_change_id_only_after_a_refusal(
    script: list[Action], deadline: float
) -> None:
    """No command before task.started; a step's command id changes only after rejected/expired."""
    started = False
    sent_for_step: dict[int, str] = {}
    refused: set[str] = set()
    for _, given_ack, decision in run_scenario(script, deadline):
        if given_ack is not None and given_ack.result in (AckResult.REJECTED, AckResult.EXPIRED):
            refused.add(given_ack.command_id)
        started = started or any(e.type == "task.started" for e in decision.events)
        if decision.command is None:
            continue
        assert started, "a command was sent before task.started was recorded"
        command = decision.command.command
        assert command.step is not None
        previous = sent_for_step.get(command.step)
        if previous is not None and previous != command.command_id:
            assert previous in refused, f"{command.command_id} replaced {previous} unrefused"
        sent_for_step[command.step] = command.command_id


@settings(max_examples=200, deadline=None)
@given(script=actions)
def test_a_new_attempt_always_follows_a_refusal_of_the_previous_id(script: list[Action]) -> None:
    """Each attempt number n > 1 appears only right after attempt n-1 was rejected or expired."""
    lease = two_step_lease()
    record = LeaseRecord(lease=lease, start_deadline=1e9)
    run = TaskRun.new(lease)
    now = 0.0
    for kind, dt, pick in script:
        now += dt
        inbound = None
        if kind == "ack_current" and run.command_id is not None:
            inbound = ack(run.command_id, RESULTS[pick])
        if kind == "restart":
            run = replace(run, deadline=None)
        before = run
        decision = decide(run, record, at(now, free_devices=OVENS, ack=inbound), SETTINGS)
        after = decision.run
        if after.step == before.step and after.attempt != before.attempt:
            assert inbound is not None
            assert inbound.result in (AckResult.REJECTED, AckResult.EXPIRED)
            assert after.attempt == before.attempt + 1
        run = after
