"""The independent invariant checks: duplicate starts and lost events from outside evidence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simulators.invariants import (
    AckSeen,
    CommandSeen,
    Confirmation,
    duplicate_starts,
    lost_events,
    task_step_of,
)


def cmd(command_id: str, device: str = "oven-1", kitchen: str = "k1") -> CommandSeen:
    task_step = task_step_of(command_id)
    assert task_step is not None
    return CommandSeen(kitchen, device, command_id, task_step[0], task_step[1], 0.0)


def ack(command_id: str, result: str, device: str = "oven-1", kitchen: str = "k1") -> AckSeen:
    return AckSeen(kitchen, device, command_id, result, None, 0.0)


def lost(
    commands: list[CommandSeen],
    acks: list[AckSeen],
    api: dict[str, str],
    *,
    confirmations: tuple[Confirmation, ...] = (),
    accepted: tuple[str, ...] = (),
    orders: tuple[str, ...] = (),
) -> list[dict[str, object]]:
    return lost_events(
        commands=commands,
        acks=acks,
        confirmations=confirmations,
        final_steps={task: 0 for task in api},
        api_tasks={task: {"state": state} for task, state in api.items()},
        accepted_order_ids=accepted,
        api_order_ids=orders,
    )


def test_resending_the_same_command_id_is_not_a_duplicate_start() -> None:
    """The agent re-sends t.s0.a1 after a crash; the oven re-acks: one start."""
    commands = [cmd("t.s0.a1"), cmd("t.s0.a1")]
    acks = [ack("t.s0.a1", "accepted"), ack("t.s0.a1", "accepted"), ack("t.s0.a1", "done")]
    assert duplicate_starts(commands, acks) == []


def test_two_accepted_attempts_of_one_step_are_a_duplicate_start() -> None:
    """Attempts a1 on oven-1 and a2 on oven-2 both accepted: the batch cooked twice."""
    commands = [cmd("t.s0.a1"), cmd("t.s0.a2", "oven-2")]
    acks = [ack("t.s0.a1", "accepted"), ack("t.s0.a2", "accepted", "oven-2")]
    found = duplicate_starts(commands, acks)
    assert [(d["task_id"], d["step"], len(d["batches"])) for d in found] == [("t", 0, 2)]


def test_a_retry_after_the_device_gave_up_is_not_a_duplicate() -> None:
    """a1 accepted then rejected (element fault), a2 on the other oven: one effective start."""
    commands = [cmd("t.s0.a1"), cmd("t.s0.a2", "oven-2")]
    acks = [
        ack("t.s0.a1", "accepted"),
        ack("t.s0.a1", "rejected"),
        ack("t.s0.a2", "accepted", "oven-2"),
    ]
    assert duplicate_starts(commands, acks) == []


def test_the_same_task_cooked_in_two_kitchens_is_a_duplicate() -> None:
    """A task started at k1 and again at k2 (a re-plan of a started task) counts."""
    commands = [cmd("t.s0.a1"), cmd("t.s0.a1", kitchen="k2")]
    acks = [ack("t.s0.a1", "accepted"), ack("t.s0.a1", "accepted", kitchen="k2")]
    assert len(duplicate_starts(commands, acks)) == 1


def test_a_start_the_control_plane_never_heard_of_is_lost() -> None:
    """Accepted on the bus, still leased in the API after the drain: a lost start event."""
    found = lost([cmd("t.s0.a1")], [ack("t.s0.a1", "accepted")], {"t": "leased"})
    assert found == [{"what": "start_lost", "task_id": "t", "api_state": "leased"}]


def test_a_final_step_done_on_the_bus_must_be_done_in_the_api() -> None:
    """The last step acked done but the task still started in the API: a lost done event."""
    acks = [ack("t.s0.a1", "accepted"), ack("t.s0.a1", "done")]
    assert lost([cmd("t.s0.a1")], acks, {"t": "started"})[0]["what"] == "done_lost"
    assert lost([cmd("t.s0.a1")], acks, {"t": "done"}) == []


def test_a_staff_confirmation_is_evidence_of_a_manual_step() -> None:
    """A confirmed final manual step with the task still leased in the API is lost."""
    found = lost([], [], {"salad": "leased"}, confirmations=(Confirmation("salad", 0),))
    assert found[0]["what"] == "start_lost"


def test_an_order_answered_201_must_exist_in_the_api() -> None:
    """An accepted order id missing from GET /v1/orders is lost."""
    found = lost([], [], {}, accepted=("o-1", "o-2"), orders=("o-1",))
    assert found == [{"what": "order_lost", "order_id": "o-2"}]


def test_rejected_and_expired_commands_are_not_starts() -> None:
    """A command answered only rejected/expired never started anything."""
    commands = [cmd("t.s0.a1"), cmd("t.s0.a2")]
    acks = [ack("t.s0.a1", "expired"), ack("t.s0.a2", "rejected")]
    assert duplicate_starts(commands, acks) == []
    assert lost(commands, acks, {"t": "planned"}) == []


@given(
    task=st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
    step=st.integers(min_value=0, max_value=31),
    attempt=st.integers(min_value=1, max_value=99),
)
def test_task_and_step_are_read_back_from_any_derived_command_id(
    task: str, step: int, attempt: int
) -> None:
    """task_step_of inverts command_id_for's '{task}.s{step}.a{attempt}'."""
    assert task_step_of(f"{task}.s{step}.a{attempt}") == (task, step)


@given(st.lists(st.sampled_from(["accepted", "done", "rejected", "expired"]), max_size=6))
def test_one_command_id_is_never_more_than_one_start(results: list[str]) -> None:
    """Whatever a device answers for a single command id, it is at most one start."""
    acks = [ack("t.s0.a1", r) for r in results]
    assert duplicate_starts([cmd("t.s0.a1")], acks) == []
