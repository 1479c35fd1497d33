"""The pure food-safety rules: rule packs, holding, cooling, cook checks, silence, offline."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.safety import (
    HOUR,
    RULE_PACKS,
    ProbeState,
    Reading,
    Thresholds,
    check_core_temperature,
    device_offline_alert,
    evaluate,
    thresholds_for,
)

FDA = RULE_PACKS["us_fda_food_code_2022"]
UK = RULE_PACKS["uk_fsa_2013"]


def feed(
    thresholds: Thresholds, readings: list[tuple[float, float]], *, tick_at: float | None = None
) -> tuple[ProbeState, list[str], list[str], list[str]]:
    """Evaluate readings ``(at, value)`` in order (then one tick); returns the final state, the
    alert kinds raised, the kinds cleared and the evidence reasons, in order."""
    state = ProbeState()
    alerts: list[str] = []
    cleared: list[str] = []
    evidence: list[str] = []
    for at, value in readings:
        outcome = evaluate(state, thresholds, now=at, reading=Reading(value_c=value, at=at))
        state = outcome.state
        alerts += [a.kind for a in outcome.alerts]
        cleared += list(outcome.cleared)
        evidence += [reason for _, reason, _ in outcome.evidence]
    if tick_at is not None:
        outcome = evaluate(state, thresholds, now=tick_at, reading=None)
        state = outcome.state
        alerts += [a.kind for a in outcome.alerts]
    return state, alerts, cleared, evidence


def test_rule_packs_cite_their_source_and_carry_the_legal_limits() -> None:
    """FDA: 5/57 °C, cooling 21 °C in 2 h and 5 °C in 6 h, cook 63/68/74; UK: 8 (5)/63 °C,
    one period out of limits < 4 h cold, < 2 h hot."""
    assert "Food Code" in FDA.source and "3-501.14" in FDA.source
    assert (FDA.cold_limit_c, FDA.hot_limit_c) == (5.0, 57.0)
    assert [(s.to_c, s.within_s) for s in FDA.cooling_stages] == [(21.0, 2 * HOUR), (5, 6 * HOUR)]
    assert FDA.cook_min_c["whole_meat"] == 63 and FDA.cook_min_c["ground_meat"] == 68
    assert FDA.cook_min_c["poultry"] == FDA.cook_min_c["reheat"] == 74
    assert "2013" in UK.source
    assert (UK.cold_limit_c, UK.cold_target_c, UK.hot_limit_c) == (8.0, 5.0, 63.0)
    assert (UK.cold_allowance_s, UK.hot_allowance_s) == (4 * HOUR, 2 * HOUR)


def test_alarm_thresholds_are_separate_from_and_inside_the_legal_limits() -> None:
    """A fridge alarms before its legal limit; a hot-hold cabinet alarms above its limit."""
    fridge = thresholds_for("fridge", FDA)
    hot = thresholds_for("hot_hold", UK)
    assert fridge.alarm_c < fridge.legal_limit_c == 5.0
    assert hot.alarm_c > hot.legal_limit_c == 63.0


def test_a_short_cold_excursion_is_evidence_but_raises_no_breach() -> None:
    """Door left open 10 minutes: every reading beyond the limit is kept, no critical alert."""
    fridge = thresholds_for("fridge", FDA)
    _, alerts, _, evidence = feed(fridge, [(0, 3.0), (60, 7.0), (600, 6.5), (660, 3.5)])
    assert "cold_holding_breach" not in alerts
    assert evidence == ["interval", "excursion", "excursion", "excursion"]


def test_a_cold_breach_beyond_the_delay_raises_one_critical_alert_until_it_ends() -> None:
    """Out of limits for longer than the delay: one breach alert (not one per reading); the
    return within limits clears it."""
    fridge = replace(thresholds_for("fridge", FDA), alarm_delay_s=1e9)
    readings = [(t * 300.0, 9.0) for t in range(12)] + [(3600.0, 4.0)]
    _, alerts, cleared, _ = feed(fridge, readings)
    assert alerts == ["cold_holding_breach"]
    assert cleared == ["cold_holding_breach"]


def test_the_alarm_threshold_warns_without_a_legal_breach() -> None:
    """4.5 °C in a US fridge (alarm 4 °C, limit 5 °C): a warning after the alarm delay only."""
    fridge = thresholds_for("fridge", FDA)
    _, alerts, _, evidence = feed(fridge, [(0, 4.5), (fridge.alarm_delay_s, 4.5)])
    assert alerts == ["cold_holding_alarm"]
    assert "excursion" not in evidence


def test_the_uk_pack_allows_one_cold_period_of_under_four_hours() -> None:
    """7 °C is within the UK limit; 9 °C for 3 h is within the allowance, for 4 h is a breach."""
    fridge = replace(thresholds_for("fridge", UK), alarm_delay_s=1e9)
    _, alerts, _, _ = feed(fridge, [(0, 7.0), (3 * HOUR, 7.0)])
    assert alerts == []
    _, alerts, _, _ = feed(fridge, [(0, 9.0), (3 * HOUR, 9.0)])
    assert alerts == []
    _, alerts, _, _ = feed(fridge, [(0, 9.0), (4 * HOUR, 9.0)])
    assert alerts == ["cold_holding_breach"]


def test_hot_holding_below_the_limit_is_a_breach_after_the_delay() -> None:
    """A US hot-hold cabinet at 50 °C for 30 minutes: critical breach."""
    cabinet = replace(thresholds_for("hot_hold", FDA), alarm_delay_s=1e9)
    _, alerts, _, _ = feed(cabinet, [(0, 50.0), (1800, 50.0)])
    assert alerts == ["hot_holding_breach"]


def test_cooling_that_misses_stage_one_asks_for_reheat_or_discard() -> None:
    """57 -> only 30 °C after 2 h: cooling_stage_1_missed, critical, reheat or discard."""
    chiller = thresholds_for("blast_chiller", FDA)
    state, alerts, _, _ = feed(chiller, [(0, 56.0), (3600, 40.0), (7200, 30.0)])
    assert alerts == ["cooling_stage_1_missed"]
    outcome = evaluate(
        ProbeState(), chiller, now=7200, reading=Reading(value_c=30.0, at=7200)
    )  # fresh state: no cooling start known, nothing to judge
    assert outcome.alerts == ()
    assert state.cooling_stage == 0


def test_cooling_that_misses_the_six_hour_total_asks_for_discard() -> None:
    """21 °C in 1.5 h but still 8 °C at 6 h: cooling_stage_2_missed with discard."""
    chiller = thresholds_for("blast_chiller", FDA)
    readings = [(0, 57.0), (5400, 20.0), (6 * HOUR, 8.0)]
    state = ProbeState()
    decided = []
    for at, value in readings:
        outcome = evaluate(state, chiller, now=at, reading=Reading(value_c=value, at=at))
        state = outcome.state
        decided += list(outcome.alerts)
    assert [(a.kind, a.corrective_action) for a in decided] == [
        ("cooling_stage_2_missed", "discard")
    ]


def test_reheating_during_cooling_restarts_the_cooling_clock() -> None:
    """Stage 1 missed, food reheated above 57 °C, then cooled in time: the miss is cleared and
    the new cooling raises nothing."""
    chiller = thresholds_for("blast_chiller", FDA)
    _, alerts, cleared, _ = feed(
        chiller,
        [(0, 56.0), (7200, 30.0), (7800, 75.0), (8400, 55.0), (12000, 20.0), (20000, 4.0)],
    )
    assert alerts == ["cooling_stage_1_missed"]
    assert cleared == ["cooling_stage_1_missed"]


def test_a_silent_probe_raises_probe_silent_and_its_next_reading_clears_it() -> None:
    """No reading for longer than silence_s: a warning; the next reading clears it."""
    fridge = thresholds_for("fridge", FDA)
    state, alerts, _, _ = feed(fridge, [(0, 3.0)], tick_at=fridge.silence_s + 1)
    assert alerts == ["probe_silent"]
    outcome = evaluate(state, fridge, now=700, reading=Reading(value_c=3.0, at=700))
    assert outcome.cleared == ("probe_silent",)


def test_per_equipment_overrides_change_thresholds_and_unknown_keys_are_refused() -> None:
    """alarm_c and breach_delay_s can be set per fridge; a misspelt key is an error."""
    custom = thresholds_for("fridge", FDA, {"alarm_c": 3.0, "breach_delay_s": 600})
    assert (custom.alarm_c, custom.breach_delay_s) == (3.0, 600.0)
    assert thresholds_for("probe", FDA, {"mode": "hot"}).legal_limit_c == 57.0
    with pytest.raises(ValueError, match="alarm_temp"):
        thresholds_for("fridge", FDA, {"alarm_temp": 3.0})


def test_a_cook_step_below_its_minimum_core_temperature_is_a_critical_alert() -> None:
    """72 °C for poultry (74 °C): alert; 74 °C passes; no reading on a checked step fails."""
    low = check_core_temperature(core_temp_c=72.0, min_core_temp_c=74.0, at=5.0)
    assert low is not None and low.severity == "critical" and low.limit == 74.0
    assert check_core_temperature(core_temp_c=74.0, min_core_temp_c=74.0, at=5.0) is None
    assert check_core_temperature(core_temp_c=None, min_core_temp_c=74.0, at=5.0) is not None
    assert check_core_temperature(core_temp_c=None, min_core_temp_c=None, at=5.0) is None


def test_a_device_offline_longer_than_the_delay_raises_device_offline() -> None:
    """Offline for 299 s: nothing; 300 s: a warning."""
    assert device_offline_alert(offline_since=0, now=299, delay_s=300) is None
    alert = device_offline_alert(offline_since=0, now=300, delay_s=300)
    assert alert is not None and alert.kind == "device_offline"


readings_strategy = st.lists(
    st.tuples(st.floats(1.0, 900.0), st.floats(-5.0, 15.0)), min_size=1, max_size=40
)


def timeline(steps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    at, out = 0.0, []
    for gap, value in steps:
        at += gap
        out.append((at, value))
    return out


@settings(max_examples=200, deadline=None)
@given(steps=readings_strategy)
def test_a_breach_alert_is_raised_exactly_for_excursions_longer_than_the_delay(
    steps: list[tuple[float, float]],
) -> None:
    """Against an oracle: one breach alert per excursion episode in which some reading came
    at least breach_delay_s after the episode's first reading beyond the limit."""
    fridge = replace(thresholds_for("fridge", FDA), alarm_delay_s=1e9, silence_s=1e9)
    readings = timeline(steps)
    _, alerts, _, _ = feed(fridge, readings)
    expected, start, raised = 0, None, False
    for at, value in readings:
        if value > fridge.legal_limit_c:
            if start is None:
                start, raised = at, False
            if not raised and at - start >= fridge.breach_delay_s:
                expected, raised = expected + 1, True
        else:
            start = None
    assert alerts.count("cold_holding_breach") == expected


@settings(max_examples=200, deadline=None)
@given(steps=readings_strategy)
def test_readings_within_the_legal_limit_never_raise_a_breach_or_excursion(
    steps: list[tuple[float, float]],
) -> None:
    """Whatever the timing, a fridge that stays at or below its limit has no breach and no
    excursion evidence."""
    fridge = thresholds_for("fridge", FDA)
    readings = [(at, min(value, fridge.legal_limit_c)) for at, value in timeline(steps)]
    _, alerts, _, evidence = feed(fridge, readings)
    assert "cold_holding_breach" not in alerts
    assert "excursion" not in evidence


@settings(max_examples=100, deadline=None)
@given(
    drops=st.lists(st.floats(0.1, 3.0), min_size=5, max_size=60),
    gap=st.floats(30.0, 300.0),
)
def test_cooling_fast_enough_for_both_stages_never_raises(drops: list[float], gap: float) -> None:
    """Any monotone cooling from 57 °C that is at 21 °C by 2 h and 5 °C by 6 h is compliant."""
    chiller = replace(thresholds_for("blast_chiller", FDA), silence_s=1e9)
    value, at, readings = 57.0, 0.0, [(0.0, 57.0)]
    for drop in drops:
        at += gap
        value = max(2.0, value - drop)
        if at >= 2 * HOUR and value > 21.0:
            value = 21.0
        if at >= 6 * HOUR:
            value = min(value, 5.0)
        readings.append((at, value))
    # the check happens at readings; make the schedule's deadlines land on one
    _, alerts, _, _ = feed(chiller, readings)
    assert alerts == []
