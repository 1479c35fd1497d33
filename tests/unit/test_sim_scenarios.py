"""The scenario table, the time window of a run, and the report builder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulators.scenarios import (
    REPORT_FIELDS,
    SCENARIOS,
    RunFacts,
    build_report,
    is_late,
    scenario_named,
    window_for,
)

REQUIRED = {
    "normal",
    "rush",
    "kitchen-offline",
    "partition",
    "agent-crash",
    "broker-restart",
    "equipment-failure",
    "cooling-violation",
}
KNOWN_TARGETS = {"oven-1", "oven-2", "fryer-1", "fridge-1"}


def facts(**changes: object) -> RunFacts:
    base = RunFacts(
        scenario="normal",
        seed=7,
        kitchens=2,
        duration_s=30.0,
        broker="mqtt://127.0.0.1:1",
        control_plane="http://127.0.0.1:2",
        submitted=3,
        accepted=2,
        rejected=1,
        orders=[
            {
                "id": "o-1",
                "status": "ready",
                "ready_at": "2026-01-01T12:00:30+00:00",
                "promised_by": "2026-01-01T12:01:00+00:00",
                "transport_min": 0.25,
            },
            {
                "id": "o-2",
                "status": "in_prep",
                "ready_at": None,
                "promised_by": "2026-01-01T12:01:00+00:00",
                "transport_min": 0.1,
            },
        ],
        tasks=[
            {"state": "done", "wasted_quantity": None},
            {"state": "failed", "wasted_quantity": 2},
        ],
        alerts=[
            {"kind": "cold_holding_breach", "agent_id": "agent-1"},
            {"kind": "low_stock", "agent_id": "control-plane"},
        ],
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_every_required_scenario_is_in_the_table() -> None:
    """The issue's eight scenarios exist (and more may)."""
    assert set(SCENARIOS) >= REQUIRED


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_scenario_is_well_formed(name: str) -> None:
    """Faults are ordered in the load phase, name known devices, and the demand has a mix."""
    scenario = SCENARIOS[name]
    assert scenario.summary
    assert scenario.demand.sku_mix
    times = [f.at for f in scenario.faults]
    assert times == sorted(times)
    assert all(0 <= t < 1 for t in times)
    assert all(f.target in KNOWN_TARGETS for f in scenario.faults if f.target)
    assert all(1 <= f.kitchen <= scenario.min_kitchens for f in scenario.faults)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_faults_that_break_something_are_healed_in_the_same_scenario(name: str) -> None:
    """A partition is healed, a crashed process started, a failed element outlives only by
    design (cooling-violation and equipment-failure heal or end explicitly)."""
    actions: list[str] = [f.action for f in SCENARIOS[name].faults]
    pairs = {
        "partition": "heal",
        "crash_agent": "start_agent",
        "kitchen_down": "kitchen_up",
        "crash_broker": "start_broker",
        "crash_control_plane": "start_control_plane",
        "open_door": "close_door",
        "bus_reset": "bus_heal",
    }
    for broken, healed in pairs.items():
        assert actions.count(broken) <= actions.count(healed), f"{broken} never undone"


def test_unknown_scenario_names_the_known_ones() -> None:
    """scenario_named('picnic') raises KeyError listing the table."""
    with pytest.raises(KeyError, match="partition"):
        scenario_named("picnic")


def test_a_short_run_plays_a_slice_centred_on_the_focus_hour() -> None:
    """42 s of load at 60x is 42 kitchen minutes around 12:30."""
    tc = window_for(SCENARIOS["normal"], 42.0)
    assert tc.factor == pytest.approx(60.0)
    assert tc.start_h < 12.5 < tc.end_h
    assert tc.end_h - tc.start_h == pytest.approx(0.7)


def test_a_long_run_plays_the_whole_opening_day_at_most() -> None:
    """Two hours of load cannot play more than the 16 opening hours."""
    scenario = SCENARIOS["normal"]
    tc = window_for(scenario, 7200.0)
    assert (tc.start_h, tc.end_h) == (scenario.demand.open_h, scenario.demand.close_h)


def test_report_has_every_field_the_issue_lists() -> None:
    """build_report writes all required fields, computed from the facts."""
    report = build_report(facts(), SCENARIOS["normal"])
    assert set(REPORT_FIELDS) <= set(report)
    assert report["orders_ready"] == 1
    assert report["orders_late"] == 1  # o-2 is not ready at the end
    assert report["tasks_done"] == 1
    assert report["waste_units"] == 2
    assert report["safety_alerts"] == 1  # low_stock is not a food-safety alert
    assert report["operational_alerts"] == 1
    assert report["sla_alerts"] == 0
    assert any("sla_alerts" in note for note in report["notes"])


def test_verdict_fails_on_duplicates_lost_events_and_errors() -> None:
    """Each broken guarantee is a named failure of the verdict."""
    report = build_report(
        facts(invariants={"duplicate_starts": 1, "lost_events": 2}, errors=["boom"]),
        SCENARIOS["partition"],
    )
    assert not report["verdict"]["passed"]
    assert report["verdict"]["failures"] == ["1 duplicate starts", "2 lost events", "1 errors"]


def test_cooling_violation_requires_a_safety_alert() -> None:
    """Without any food-safety alert or device alarm the cooling-violation verdict fails."""
    quiet = build_report(facts(alerts=[]), SCENARIOS["cooling-violation"])
    assert quiet["verdict"]["failures"] == ["no food-safety alert was raised"]
    alarmed = build_report(facts(alerts=[], device_alarms=1), SCENARIOS["cooling-violation"])
    assert alarmed["verdict"]["passed"]


def test_late_means_ready_after_promise_minus_transport() -> None:
    """Ready 20 s before the promise with 15 s transport is on time; with 30 s it is late."""
    order = {
        "status": "ready",
        "ready_at": "2026-01-01T12:00:40+00:00",
        "promised_by": "2026-01-01T12:01:00+00:00",
        "transport_min": 0.25,
    }
    assert not is_late(order)
    assert is_late({**order, "transport_min": 0.5})
    assert not is_late({**order, "status": "rejected", "ready_at": None})


def test_an_open_order_still_in_time_at_the_end_is_not_late() -> None:
    """Not ready, but its due time comes after the run's end: open, not late."""
    order = {
        "status": "in_prep",
        "ready_at": None,
        "promised_by": "2026-01-01T12:01:00+00:00",
        "transport_min": 0.5,
    }
    before_due = datetime(2026, 1, 1, 12, 0, 20, tzinfo=UTC)
    after_due = datetime(2026, 1, 1, 12, 0, 40, tzinfo=UTC)
    assert not is_late(order, at=before_due)
    assert is_late(order, at=after_due)
