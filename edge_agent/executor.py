"""The prep-task state machine: pure, no I/O, no clocks of its own.

:func:`decide` takes one task's persisted :class:`TaskRun`, its :class:`LeaseRecord` and what
the agent observes right now (:class:`Inputs`: the monotonic ``now``, the wall clock, free
devices, an ack or a staff confirmation) and returns a :class:`Decision`: the new run state, the
events to record, at most one command to send, and when to look again. The caller persists the
new state and the events in one transaction *and only then* sends the command, which is what
makes guarantee 3 hold:

* ``task.started`` is durably in the outbox before the first command is sent (both are in the
  decision that starts the task, and the caller commits before it publishes);
* command ids are ``command_id_for(task, step, attempt)``; a timeout or a restart re-sends the
  *same* id (devices dedupe), the attempt only moves on after the device answered
  ``rejected`` or ``expired``, i.e. after it definitively did not act on the previous id;
* a started task is never started again: after a restart it resumes from the persisted step;
* a step is not failed while its device keeps answering: after ``duration + step_margin`` the
  agent re-sends the same id, a re-sent ``accepted`` proves the device alive (preheating can
  outlast the nominal duration) and only ``max_resends`` unanswered re-sends fail the task;
  silence while the broker link or the device is down (``Inputs.link_up``, ``Inputs.online``)
  proves nothing, so the timer is pushed on and no re-send is counted;
* a ``rejected`` ack whose reason starts with ``busy`` (the device serves another command) is not
  a failure: the next attempt goes to another free device of the kind, or waits with a growing
  backoff for this one, and does not count toward ``max_attempts``; after a fault (another
  rejection, or ``expired``) the next attempt prefers another device of the kind;
* a task is never started at or after its start-by deadline, a *monotonic* instant
  (``sync request send time + start_within_s``); a lease whose deadline passed or cannot be
  proven (``start_deadline is None``, e.g. after a reboot reset the monotonic clock) is released
  with reason ``start_by_expired`` instead.

>>> from protocol import Lease, RecipeStep
>>> lease = Lease(task_id="t1", kitchen_id="k1", station_id="s1", sku_id="sku", sku_name="Pie",
...     quantity=2, order_ids=["o1"], fencing_token=1, start_after=0, finish_by=9e9,
...     start_by=9e9, start_within_s=60,
...     steps=[RecipeStep(index=0, name="bake", equipment_kind="oven", duration_s=30)])
>>> record = LeaseRecord(lease=lease, start_deadline=100.0, not_before=0.0)
>>> run = TaskRun.new(lease)
>>> decision = decide(run, record, Inputs(now=10.0, wall=1.7e9,
...     free_devices={"oven": ("oven-1",)}), ExecutorSettings())
>>> [e.type for e in decision.events], decision.command.command.command_id
(['task.started', 'task.step_started'], 't1.s0.a1')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from protocol import (
    Ack,
    AckResult,
    Command,
    EventType,
    Lease,
    RecipeStep,
    StepDone,
    StepStarted,
    TaskDone,
    TaskFailed,
    TaskReleased,
    TaskStarted,
    command_id_for,
)


class RunState(StrEnum):
    """Where a leased task is on this agent."""

    LEASED = "leased"
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    RELEASED = "released"
    CANCELLED = "cancelled"


#: States in which the task still needs the executor.
ACTIVE_STATES = frozenset({RunState.LEASED, RunState.STARTED})


class StepPhase(StrEnum):
    """Where the current step is."""

    PENDING = "pending"  # not begun: waiting for a free device
    COMMANDED = "commanded"  # command sent, no ack yet
    ACCEPTED = "accepted"  # device acked ``accepted``, cooking
    AWAITING_STAFF = "awaiting_staff"  # manual step announced, waiting for a badge


@dataclass(frozen=True, slots=True)
class TaskRun:
    """The persisted execution state of one leased task.

    ``deadline`` (monotonic) is the only field not persisted: after a restart it is ``None``,
    which makes :func:`decide` re-send the current command under the same id and restart the
    timer, so a restart can only make the agent wait longer, never skip a wait.
    """

    task_id: str
    fencing_token: int
    state: RunState = RunState.LEASED
    started: bool = False
    step: int = 0
    phase: StepPhase = StepPhase.PENDING
    attempt: int = 1
    device_id: str | None = None
    command_issued_at: float | None = None
    resends: int = 0
    #: Attempts of the current step the device refused only because it was busy with another
    #: command: they changed the command id but do not count toward ``max_attempts``.
    busy: int = 0
    deadline: float | None = None

    @classmethod
    def new(cls, lease: Lease) -> TaskRun:
        return cls(task_id=lease.task_id, fencing_token=lease.fencing_token)

    @property
    def command_id(self) -> str | None:
        """Id of the command in flight for the current step, if one was sent."""
        if self.phase in (StepPhase.COMMANDED, StepPhase.ACCEPTED):
            return command_id_for(self.task_id, self.step, self.attempt)
        return None


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A lease plus its deadlines on the agent's monotonic clock.

    ``start_deadline`` is ``None`` when it cannot be proven (the clock it was measured on did not
    survive a reboot); such a lease is never started.
    """

    lease: Lease
    start_deadline: float | None
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class StaffConfirmation:
    """A staff member confirmed a manual step (``step_confirmed`` device event)."""

    task_id: str
    step: int
    badge: str


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the agent observes at ``now`` (monotonic seconds) and ``wall`` (unix seconds)."""

    now: float
    wall: float
    #: Online devices by kind that no *other* task is using (this task's own device counts as free).
    free_devices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ack: Ack | None = None
    confirmation: StaffConfirmation | None = None
    #: The MQTT link is connected (commands can reach devices).
    link_up: bool = True
    #: Devices known online; ``None`` when not known (treated as online).
    online: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """Timeouts and retry limits of step execution."""

    ack_wait_s: float = 5.0
    step_margin_s: float = 120.0
    manual_margin_s: float = 600.0
    command_ttl_s: float = 60.0
    #: While a device reports a step ``accepted``, how often to ask it again (same id).
    progress_poll_s: float = 30.0
    max_resends: int = 12
    max_attempts: int = 3
    idle_recheck_s: float = 1.0
    #: Waits after a ``busy`` refusal: ``busy_backoff_s * 2**n``, at most ``busy_backoff_cap_s``.
    busy_backoff_s: float = 1.0
    busy_backoff_cap_s: float = 30.0


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event to append to the outbox."""

    type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutgoingCommand:
    """A command to publish to ``device_id`` after the decision is persisted."""

    device_id: str
    command: Command


@dataclass(frozen=True, slots=True)
class Decision:
    """The new state, the events to record with it, at most one command, and when to wake."""

    run: TaskRun
    events: tuple[EventRecord, ...] = ()
    command: OutgoingCommand | None = None
    wake_at: float | None = None

    @property
    def changed(self) -> bool:
        return bool(self.events) or self.command is not None


def decide(
    run: TaskRun, record: LeaseRecord, inputs: Inputs, settings: ExecutorSettings
) -> Decision:
    """The next step of ``run`` given ``inputs``; see the module docstring for the rules."""
    if run.state == RunState.LEASED:
        return _decide_unstarted(run, record, inputs, settings)
    if run.state == RunState.STARTED:
        if not 0 <= run.step < len(record.lease.steps):
            # Persisted state that contradicts the lease: stop rather than guess a step.
            return _fail(run, "invalid_step_index")
        return _decide_started(run, record, inputs, settings)
    return Decision(run=run)


def _decide_unstarted(
    run: TaskRun, record: LeaseRecord, inputs: Inputs, settings: ExecutorSettings
) -> Decision:
    deadline = record.start_deadline
    if deadline is None or inputs.now >= deadline:
        payload = TaskReleased(
            task_id=run.task_id, fencing_token=run.fencing_token, reason="start_by_expired"
        )
        return Decision(
            run=replace(run, state=RunState.RELEASED, deadline=None),
            events=(_event(EventType.TASK_RELEASED, payload),),
        )
    if inputs.now < record.not_before:
        return Decision(run=run, wake_at=min(record.not_before, deadline))
    step = record.lease.steps[0]
    begun = _begin_step(replace(run, step=0, attempt=1), step, record, inputs, settings)
    if begun is None:
        # No free device of the right kind yet: look again soon, and at the deadline at the latest.
        return Decision(run=run, wake_at=min(inputs.now + settings.idle_recheck_s, deadline))
    started = TaskStarted(
        task_id=run.task_id,
        fencing_token=run.fencing_token,
        station_id=record.lease.station_id,
    )
    return replace(
        begun,
        run=replace(begun.run, state=RunState.STARTED, started=True),
        events=(_event(EventType.TASK_STARTED, started), *begun.events),
    )


def _decide_started(
    run: TaskRun, record: LeaseRecord, inputs: Inputs, settings: ExecutorSettings
) -> Decision:
    steps = record.lease.steps
    step = steps[run.step]
    if run.phase == StepPhase.PENDING:
        if run.deadline is not None and inputs.now < run.deadline:
            return Decision(run=run, wake_at=run.deadline)  # backing off after a ``busy``
        begun = _begin_step(run, step, record, inputs, settings)
        if begun is None:
            return Decision(run=run, wake_at=inputs.now + settings.idle_recheck_s)
        return begun
    if run.phase == StepPhase.AWAITING_STAFF:
        return _await_staff(run, step, record, inputs, settings)
    return _await_device(run, step, record, inputs, settings)


def _await_device(
    run: TaskRun, step: RecipeStep, record: LeaseRecord, inputs: Inputs, settings: ExecutorSettings
) -> Decision:
    ack = inputs.ack
    if ack is not None and ack.command_id == run.command_id:
        if ack.result == AckResult.DONE:
            core = ack.data.get("core_temp_c")
            done = StepDone(
                task_id=run.task_id,
                fencing_token=run.fencing_token,
                step=run.step,
                device_id=run.device_id,
                command_id=run.command_id,
                core_temp_c=float(core) if isinstance(core, int | float) else None,
            )
            return _after_step(run, _event(EventType.STEP_DONE, done), record, inputs, settings)
        if ack.result == AckResult.ACCEPTED:
            if run.phase == StepPhase.COMMANDED:
                cook_deadline = inputs.now + step.duration_s + settings.step_margin_s
                accepted = replace(run, phase=StepPhase.ACCEPTED, deadline=cook_deadline)
                return Decision(run=accepted, wake_at=cook_deadline)
            if run.resends > 0:
                # The device answered a re-send with ``accepted``: it is alive and still working
                # (preheating may take far longer than the step's duration). Ask again later.
                alive = replace(run, resends=0, deadline=inputs.now + settings.progress_poll_s)
                return Decision(run=alive, wake_at=alive.deadline)
            # A duplicate of the first ``accepted`` (QoS 1 redelivery): keep the current timer.
            return Decision(run=run, wake_at=run.deadline)
        # Rejected or expired: the device did not act on this id, so a new attempt is safe.
        busy = ack.result == AckResult.REJECTED and (ack.reason or "").startswith("busy")
        if busy:
            # Not a failure: the device is serving another command. Try another free device of
            # the kind at once, else wait (growing backoff) for this one; the id must change.
            others = [d for d in _candidates(step, inputs) if d != run.device_id]
            retry = replace(
                run, attempt=run.attempt + 1, busy=run.busy + 1, phase=StepPhase.PENDING, resends=0
            )
            if others:
                begun = _begin_step(retry, step, record, inputs, settings, avoid=run.device_id)
                if begun is not None:
                    return begun
            delay = min(
                settings.busy_backoff_s * 2 ** min(run.busy, 16), settings.busy_backoff_cap_s
            )
            waiting = replace(retry, deadline=inputs.now + delay)
            return Decision(run=waiting, wake_at=waiting.deadline)
        if run.attempt - run.busy >= settings.max_attempts:
            return _fail(run, f"step_{ack.result.value}")
        retry = replace(run, attempt=run.attempt + 1, phase=StepPhase.PENDING, resends=0)
        # The device faulted or let the command expire: prefer another device of the kind.
        begun = _begin_step(retry, step, record, inputs, settings, avoid=run.device_id)
        if begun is None:
            return Decision(run=retry, wake_at=inputs.now + settings.idle_recheck_s)
        return begun
    if not inputs.link_up or (inputs.online is not None and run.device_id not in inputs.online):
        # Broker or device out of reach: a re-send could not arrive and silence proves nothing.
        # Keep waiting without counting re-sends; the timer restarts when it is back.
        held = replace(run, deadline=inputs.now + settings.ack_wait_s)
        return Decision(run=held, wake_at=held.deadline)
    if run.deadline is None:
        # Restarted: re-send the same command id; the device dedupes and re-sends its ack.
        return _resend(replace(run, resends=run.resends + 1), step, inputs, settings)
    if inputs.now >= run.deadline:
        if run.resends >= settings.max_resends:
            reason = "device_unresponsive" if run.phase == StepPhase.COMMANDED else "step_timeout"
            return _fail(run, reason)
        return _resend(replace(run, resends=run.resends + 1), step, inputs, settings)
    return Decision(run=run, wake_at=run.deadline)


def _await_staff(
    run: TaskRun, step: RecipeStep, record: LeaseRecord, inputs: Inputs, settings: ExecutorSettings
) -> Decision:
    confirmation = inputs.confirmation
    if (
        confirmation is not None
        and confirmation.task_id == run.task_id
        and confirmation.step == run.step
    ):
        done = StepDone(
            task_id=run.task_id,
            fencing_token=run.fencing_token,
            step=run.step,
            staff_badge=confirmation.badge,
        )
        return _after_step(run, _event(EventType.STEP_DONE, done), record, inputs, settings)
    if run.deadline is None:
        deadline = inputs.now + step.duration_s + settings.manual_margin_s
        return Decision(run=replace(run, deadline=deadline), wake_at=deadline)
    if inputs.now >= run.deadline:
        return _fail(run, "manual_step_timeout")
    return Decision(run=run, wake_at=run.deadline)


def _after_step(
    run: TaskRun,
    step_done: EventRecord,
    record: LeaseRecord,
    inputs: Inputs,
    settings: ExecutorSettings,
) -> Decision:
    lease = record.lease
    if run.step + 1 >= len(lease.steps):
        finished = TaskDone(
            task_id=run.task_id, fencing_token=run.fencing_token, quantity=lease.quantity
        )
        return Decision(
            run=replace(run, state=RunState.DONE, deadline=None),
            events=(step_done, _event(EventType.TASK_DONE, finished)),
        )
    following = replace(
        run,
        step=run.step + 1,
        attempt=1,
        phase=StepPhase.PENDING,
        device_id=None,
        command_issued_at=None,
        resends=0,
        busy=0,
        deadline=None,
    )
    begun = _begin_step(following, lease.steps[run.step + 1], record, inputs, settings)
    if begun is None:
        return Decision(
            run=following, events=(step_done,), wake_at=inputs.now + settings.idle_recheck_s
        )
    return replace(begun, events=(step_done, *begun.events))


def _begin_step(
    run: TaskRun,
    step: RecipeStep,
    record: LeaseRecord,
    inputs: Inputs,
    settings: ExecutorSettings,
    *,
    avoid: str | None = None,
) -> Decision | None:
    """Announce ``step`` (and command its device); ``None`` if no device of its kind is free.

    ``avoid`` (the device that just faulted or was busy) is only chosen when no other is free.
    """
    if is_manual(step):
        deadline = inputs.now + step.duration_s + settings.manual_margin_s
        announced = StepStarted(task_id=run.task_id, fencing_token=run.fencing_token, step=run.step)
        return Decision(
            run=replace(run, phase=StepPhase.AWAITING_STAFF, device_id=None, deadline=deadline),
            events=(_event(EventType.STEP_STARTED, announced),),
            wake_at=deadline,
        )
    assert step.equipment_kind is not None  # is_manual() covers steps without equipment
    candidates = _candidates(step, inputs)
    others = [d for d in candidates if d != avoid]
    # A restart goes back to the device of the previous attempt when it is still free; a retry
    # after a fault prefers another device and returns to the same one only when it is alone.
    device_id = run.device_id if run.device_id in candidates and avoid is None else None
    if device_id is None:
        device_id = others[0] if others else (candidates[0] if candidates else None)
    if device_id is None:
        return None
    commanded = replace(
        run,
        phase=StepPhase.COMMANDED,
        device_id=device_id,
        command_issued_at=inputs.wall,
        resends=0,
        deadline=inputs.now + settings.ack_wait_s,
    )
    announced = StepStarted(
        task_id=run.task_id,
        fencing_token=run.fencing_token,
        step=run.step,
        device_id=device_id,
        command_id=commanded.command_id,
    )
    return Decision(
        run=commanded,
        events=(_event(EventType.STEP_STARTED, announced),),
        command=build_command(commanded, step, settings),
        wake_at=commanded.deadline,
    )


def _candidates(step: RecipeStep, inputs: Inputs) -> list[str]:
    if step.equipment_kind is None:
        return []
    return sorted(inputs.free_devices.get(step.equipment_kind, ()))


def _resend(run: TaskRun, step: RecipeStep, inputs: Inputs, settings: ExecutorSettings) -> Decision:
    waiting = replace(run, deadline=inputs.now + settings.ack_wait_s)
    return Decision(
        run=waiting, command=build_command(waiting, step, settings), wake_at=waiting.deadline
    )


def _fail(run: TaskRun, reason: str) -> Decision:
    failed = TaskFailed(
        task_id=run.task_id, fencing_token=run.fencing_token, reason=reason, started=run.started
    )
    return Decision(
        run=replace(run, state=RunState.FAILED, deadline=None),
        events=(_event(EventType.TASK_FAILED, failed),),
    )


def is_manual(step: RecipeStep) -> bool:
    """Staff perform the step: marked manual, or no equipment to command."""
    return step.manual or step.equipment_kind is None


def build_command(run: TaskRun, step: RecipeStep, settings: ExecutorSettings) -> OutgoingCommand:
    """The command of the current attempt; identical bytes for every re-send of the same id."""
    command_id = run.command_id
    if command_id is None or run.device_id is None or run.command_issued_at is None:
        raise ValueError(f"task {run.task_id} step {run.step} has no command in flight")
    params: dict[str, str | int | float | bool] = {"duration_s": step.duration_s}
    if step.setpoint_c is not None:
        params["setpoint_c"] = step.setpoint_c
    command = Command(
        command_id=command_id,
        action=step.action,
        params=params,
        issued_at=run.command_issued_at,
        expires_at=run.command_issued_at + settings.command_ttl_s,
        task_id=run.task_id,
        step=run.step,
    )
    return OutgoingCommand(device_id=run.device_id, command=command)


def _event(kind: EventType, payload: Any) -> EventRecord:
    return EventRecord(type=kind.value, payload=payload.model_dump(mode="json", exclude_none=True))
