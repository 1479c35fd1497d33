"""The control loop's snapshot file: what one process publishes another reads exactly, a torn
or planted file changes nothing, and an unchanged file is not read again."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from control_plane.metrics import Metrics
from control_plane.planning.backpressure import Actions, Decision
from control_plane.planning.prep_times import PrepObservation, PrepTimeModel, observe
from control_plane.planning.sla import Prediction
from control_plane.planning_snapshot import (
    PlanningFollower,
    SnapshotError,
    path_beside,
    read,
    write,
)
from control_plane.planning_state import PlanningState

T0 = 1_800_000_000.0


def learned_model() -> PrepTimeModel:
    model = PrepTimeModel()
    for n in range(8):
        start = T0 + n * 1000
        observation = PrepObservation("k1", "bowl", start, start + 300 + n * 10)
        model = observe(model, start + 400, observation, nominal_s=240.0)
    return model


def published_state() -> PlanningState:
    state = PlanningState()
    state.publish_decisions(
        {
            "*": Decision("*", "normal", Actions(), "all quiet", changed=False),
            "k1": Decision(
                "k1",
                "shed",
                Actions(frozenset({"low", "normal"}), 600.0, None, True),
                "at risk 0.4 >= 0.3",
                changed=True,
            ),
        }
    )
    state.publish_predictions(
        {
            "o1": Prediction("o1", T0 + 60, T0 + 90, T0 + 700, 610.0, 0.01, "queue"),
            "o2": Prediction("o2", float("inf"), float("inf"), T0, float("-inf"), 1.0, "stranded"),
        }
    )
    state.publish_prep_model(learned_model())
    return state


def test_a_follower_holds_exactly_what_was_published(tmp_path: Path) -> None:
    path = path_beside(tmp_path / "cp.db")
    assert path.name == "cp.db.planning"
    source = published_state()
    write(path, source, metrics=b"brigade_x 1.0\n", at=T0, prep_version=7)

    follower_state = PlanningState()
    follower = PlanningFollower(path, follower_state)
    assert follower.poll()

    assert dict(follower_state.decisions()) == dict(source.decisions())
    for order_id in ("o1", "o2"):
        assert follower_state.prediction(order_id) == source.prediction(order_id)
    assert follower_state.prediction("o3") is None
    got, want = follower_state.prep_model(), source.prep_model()
    assert got == want
    assert got.estimate("k1", "bowl", nominal_s=240.0) == want.estimate(
        "k1", "bowl", nominal_s=240.0
    )
    assert follower.metrics == b"brigade_x 1.0\n"
    assert follower.published_at == T0
    assert follower.age_s(now=T0 + 3) == 3.0


def test_an_unchanged_file_is_not_read_again_nor_an_unchanged_model(tmp_path: Path) -> None:
    path = tmp_path / "cp.db.planning"
    source = published_state()
    write(path, source, metrics=b"", at=T0, prep_version=1)
    follower_state = PlanningState()
    follower = PlanningFollower(path, follower_state)
    assert follower.poll()
    model, decision = follower_state.prep_model(), follower_state.decisions()["k1"]
    assert not follower.poll()  # same file: nothing loaded

    # A new tick, same model version and same decisions: the objects in force are kept.
    write(path, source, metrics=b"", at=T0 + 2, prep_version=1)
    os.utime(path, ns=(1, 2))  # a new identity even within the filesystem's time resolution
    assert follower.poll()
    assert follower_state.prep_model() is model
    assert follower_state.decisions()["k1"] is decision
    assert follower.published_at == T0 + 2

    # The model changed (the loop learned a completion): it is loaded again.
    source.publish_prep_model(PrepTimeModel())
    write(path, source, metrics=b"", at=T0 + 4, prep_version=2)
    assert follower.poll()
    assert follower_state.prep_model() == PrepTimeModel()


def test_a_torn_file_is_skipped_counted_and_the_last_good_one_holds(tmp_path: Path) -> None:
    path = tmp_path / "cp.db.planning"
    write(path, published_state(), metrics=b"", at=T0, prep_version=1)
    metrics = Metrics()
    follower_state = PlanningState()
    follower = PlanningFollower(path, follower_state, on_error=metrics.planning_snapshot_errors.inc)
    assert follower.poll()

    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a crash mid-write (without the rename)
    assert not follower.poll()
    assert metrics.registry.get_sample_value("brigade_planning_snapshot_errors_total") == 1.0
    assert follower_state.decisions()["k1"].level == "shed"
    assert follower_state.prediction("o1") is not None
    assert not follower.poll()  # not retried until the file changes again
    assert metrics.registry.get_sample_value("brigade_planning_snapshot_errors_total") == 1.0

    write(path, PlanningState(), metrics=b"", at=T0 + 10, prep_version=2)
    assert follower.poll()
    assert follower_state.prediction("o1") is None


def test_a_planted_pickle_cannot_run_code(tmp_path: Path) -> None:
    """Only plain values and the prep-time model's classes may be named in a snapshot."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "cp.db.planning"
    path.write_bytes(pickle.dumps({"format": 1, "prep": Exploit()}))
    with pytest.raises(SnapshotError, match="may not name"):
        read(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [{"format": 99}, {"format": 1, "at": 0.0}, ["not", "a", "snapshot"], b"\x80\x05garbage"],
)
def test_a_foreign_or_incomplete_file_is_an_error(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "cp.db.planning"
    path.write_bytes(payload if isinstance(payload, bytes) else pickle.dumps(payload))
    with pytest.raises(SnapshotError):
        read(path)


def test_a_missing_file_is_not_an_error_for_the_follower(tmp_path: Path) -> None:
    metrics = Metrics()
    follower = PlanningFollower(
        tmp_path / "none.planning", PlanningState(), on_error=metrics.planning_snapshot_errors.inc
    )
    assert not follower.poll()
    assert metrics.registry.get_sample_value("brigade_planning_snapshot_errors_total") == 0.0
    assert follower.age_s() != follower.age_s()  # NaN: nothing in force yet
    with pytest.raises(SnapshotError, match="no snapshot"):
        read(tmp_path / "none.planning")


def test_write_replaces_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "cp.db.planning"
    write(path, published_state(), metrics=b"", at=T0)
    write(path, PlanningState(), metrics=b"", at=T0 + 1)
    assert [p.name for p in tmp_path.iterdir()] == ["cp.db.planning"]
    assert read(path).at == T0 + 1


def test_the_loops_doorbell_rings_are_passed_on_once_each(tmp_path: Path) -> None:
    """Re-planning in the loop's process rings kitchens there; each server rings them again
    for its own waiting agents, once per ring, including rings of ticks it did not load."""
    path = tmp_path / "cp.db.planning"
    rung: list[set[str]] = []
    follower = PlanningFollower(path, PlanningState(), on_rings=rung.append)
    state = PlanningState()

    def publish(rings: dict[str, int], *, pid: int = 100) -> bool:
        write(path, state, metrics=b"", at=T0, rings=rings, pid=pid)
        os.utime(path, ns=(len(rung), len(rung) + 1 + sum(rings.values()) + pid))
        return follower.poll()

    assert publish({})
    assert rung == []
    assert publish({"k1": 1})
    assert publish({"k1": 3, "k2": 1})  # two rings of k1 (one tick not seen) and k2's first
    assert publish({"k1": 3, "k2": 1, "k3": 0})  # nothing new
    assert rung == [{"k1"}, {"k1", "k2"}]
    # A restarted loop process counts from zero: every kitchen it rang is rung.
    assert publish({"k2": 1}, pid=101)
    assert rung[-1] == {"k2"}
    assert len(rung) == 3
