"""Staff behaviour for manual steps: reaction delays and absences (the pure part)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from simulators.staff import StaffMember, plan_confirmation


def test_present_staff_confirm_after_their_reaction_time() -> None:
    """With no spread, the confirmation comes exactly mean_delay_s after the step is due."""
    roster = (StaffMember("B-1", mean_delay_s=3.0, sd_delay_s=0.0),)
    assert plan_confirmation(roster, due_at_s=5.0, rng=random.Random(0)) == ("B-1", 8.0)


def test_when_everyone_is_away_the_first_back_confirms() -> None:
    """Both away at t=10: the one back at 15 (not the one back at 30) confirms after 15."""
    roster = (
        StaffMember("B-1", mean_delay_s=1.0, sd_delay_s=0.0, absences=((0.0, 30.0),)),
        StaffMember("B-2", mean_delay_s=1.0, sd_delay_s=0.0, absences=((8.0, 15.0),)),
    )
    assert plan_confirmation(roster, due_at_s=10.0, rng=random.Random(0)) == ("B-2", 16.0)


def test_an_absent_member_never_confirms_while_someone_is_present() -> None:
    """Only present staff are picked while anyone is present."""
    roster = (
        StaffMember("away", absences=((0.0, 100.0),)),
        StaffMember("here"),
    )
    rng = random.Random(4)
    assert {plan_confirmation(roster, due_at_s=50.0, rng=rng)[0] for _ in range(50)} == {"here"}


@given(
    due=st.floats(min_value=0, max_value=1e5),
    mean=st.floats(min_value=0, max_value=60),
    sd=st.floats(min_value=0, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32),
    absences=st.lists(
        st.tuples(st.floats(min_value=0, max_value=1e5), st.floats(min_value=0, max_value=1e4)),
        max_size=3,
    ),
)
def test_a_confirmation_is_never_before_the_step_is_due_nor_during_an_absence(
    due: float, mean: float, sd: float, seed: int, absences: list[tuple[float, float]]
) -> None:
    """at >= due + min_delay_s, and the one confirming is back by the time they start."""
    member = StaffMember(
        "B-9",
        mean_delay_s=mean,
        sd_delay_s=sd,
        absences=tuple((start, start + length) for start, length in absences),
    )
    badge, at = plan_confirmation((member,), due_at_s=due, rng=random.Random(seed))
    assert badge == "B-9"
    assert at >= due + member.min_delay_s
    assert member.present_at(member.back_at(due))
