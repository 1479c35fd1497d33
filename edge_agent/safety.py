"""Food-safety rules: pure functions over readings, thresholds and ``now``; no I/O, no clocks.

The rules come from *rule packs*, data that cite their source (SPEC guarantee 7), chosen per
kitchen; each piece of equipment gets :class:`Thresholds` derived from its kind and the pack,
which the kitchen may override per equipment (``AgentConfig.safety_overrides``). Two kinds of
threshold are kept apart on purpose:

* the **legal limit** (e.g. cold holding 5 °C in the US, 8 °C in the UK): a reading beyond it
  starts an *excursion*, kept as HACCP evidence; an excursion longer than the allowed
  ``breach_delay_s`` raises a *critical* alert that needs a corrective action;
* the **alarm threshold** (e.g. a fridge alarm at 4 °C): an operational early warning, a
  *warning* alert after ``alarm_delay_s``, no legal meaning.

:func:`evaluate` takes one probe's :class:`ProbeState`, its thresholds, ``now`` (agent wall
clock) and optionally a new reading, and returns an :class:`Outcome`: the new state, alerts to
raise, alert kinds whose condition ended, and evidence to keep. It covers holding (cold/hot),
two-stage cooling (57 -> 21 °C within 2 h, -> 5 °C within 6 h in total, with the
reheat-or-discard branch), probe silence; :func:`check_core_temperature` covers cook steps and
:func:`device_offline_alert` equipment that went away.

>>> pack = RULE_PACKS["us_fda_food_code_2022"]
>>> fridge = thresholds_for("fridge", pack)
>>> state = ProbeState()
>>> out = evaluate(state, fridge, now=0.0, reading=Reading(value_c=9.0, at=0.0))
>>> [reason for _value, reason, _limit in out.evidence], out.alerts
(['excursion'], ())
>>> later = evaluate(out.state, fridge, now=1801.0, reading=Reading(value_c=9.5, at=1801.0))
>>> sorted((a.kind, a.severity) for a in later.alerts)
[('cold_holding_alarm', 'warning'), ('cold_holding_breach', 'critical')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Mode = Literal["cold", "hot", "cooling", "none"]
Severity = Literal["info", "warning", "critical"]

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class CoolingStage:
    """Cooled food must reach ``to_c`` within ``within_s`` of starting to cool from ``from_c``."""

    to_c: float
    within_s: float
    #: What to do when the stage is missed (corrective action the alert asks for).
    if_missed: str


@dataclass(frozen=True, slots=True)
class RulePack:
    """Legal limits of one jurisdiction, with the texts they come from."""

    pack_id: str
    source: str
    cold_limit_c: float
    cold_target_c: float
    hot_limit_c: float
    #: How long food may be out of limits before it is a breach (an allowance of the law, or 0).
    cold_allowance_s: float
    hot_allowance_s: float
    cooling_from_c: float
    cooling_stages: tuple[CoolingStage, ...]
    #: Minimum core temperature by food, for cook steps without their own ``min_core_temp_c``.
    cook_min_c: Mapping[str, float] = field(default_factory=dict)


#: The rule packs a kitchen can choose (``AgentConfig.rule_pack``).
RULE_PACKS: dict[str, RulePack] = {
    pack.pack_id: pack
    for pack in (
        RulePack(
            pack_id="us_fda_food_code_2022",
            source=(
                "US FDA Food Code 2022: 3-501.16 (cold holding 41 °F/5 °C, hot holding "
                "135 °F/57 °C), 3-501.14 (cooling 135->70 °F in 2 h, ->41 °F in 6 h total), "
                "3-401.11 and 3-403.11 (cooking and reheating temperatures)"
            ),
            cold_limit_c=5.0,
            cold_target_c=5.0,
            hot_limit_c=57.0,
            # The Food Code has no out-of-limit allowance for holding; the delay before the
            # alert is the kitchen's (a door opening must not page anyone), 30 min by default.
            cold_allowance_s=0.5 * HOUR,
            hot_allowance_s=0.5 * HOUR,
            cooling_from_c=57.0,
            cooling_stages=(
                CoolingStage(to_c=21.0, within_s=2 * HOUR, if_missed="reheat_to_74c_or_discard"),
                CoolingStage(to_c=5.0, within_s=6 * HOUR, if_missed="discard"),
            ),
            cook_min_c={
                "whole_meat": 63.0,
                "fish": 63.0,
                "ground_meat": 68.0,
                "poultry": 74.0,
                "reheat": 74.0,
            },
        ),
        RulePack(
            pack_id="uk_fsa_2013",
            source=(
                "UK Food Safety and Hygiene (England) Regulations 2013, Schedule 4: chill "
                "holding at or below 8 °C (5 °C target, FSA Safer Food Better Business), hot "
                "holding at or above 63 °C; one period out of limits allowed: < 2 h hot, < 4 h "
                "cold. Cooling per FSA guidance, as the FDA two-stage schedule."
            ),
            cold_limit_c=8.0,
            cold_target_c=5.0,
            hot_limit_c=63.0,
            cold_allowance_s=4 * HOUR,
            hot_allowance_s=2 * HOUR,
            cooling_from_c=57.0,
            cooling_stages=(
                CoolingStage(to_c=21.0, within_s=2 * HOUR, if_missed="reheat_to_75c_or_discard"),
                CoolingStage(to_c=5.0, within_s=6 * HOUR, if_missed="discard"),
            ),
            cook_min_c={"whole_meat": 75.0, "poultry": 75.0, "reheat": 75.0},
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What one piece of equipment is checked against; derived from the pack, overridable."""

    mode: Mode
    legal_limit_c: float
    alarm_c: float
    breach_delay_s: float
    alarm_delay_s: float = 15 * 60.0
    silence_s: float = 10 * 60.0
    evidence_interval_s: float = 15 * 60.0
    probe_accuracy_c: float = 1.0
    cooling_from_c: float = 57.0
    cooling_stages: tuple[CoolingStage, ...] = ()


#: Default monitoring per equipment kind: (mode, alarm margin inside the legal limit).
_KIND_MODES: dict[str, tuple[Mode, float]] = {
    "fridge": ("cold", 1.0),
    "freezer": ("cold", 20.0),  # alarm at limit - 20 °C: a freezer warms long before food does
    "hot_hold": ("hot", 3.0),
    "blast_chiller": ("cooling", 0.0),
    "probe": ("none", 0.0),
    "oven": ("none", 0.0),
    "fryer": ("none", 0.0),
    "grill": ("none", 0.0),
}


def thresholds_for(
    kind: str | None, pack: RulePack, overrides: Mapping[str, float | str] | None = None
) -> Thresholds:
    """Thresholds of equipment of ``kind`` under ``pack``, with per-equipment ``overrides``.

    >>> thresholds_for("fridge", RULE_PACKS["uk_fsa_2013"]).legal_limit_c
    8.0
    >>> thresholds_for("fridge", RULE_PACKS["uk_fsa_2013"], {"alarm_c": 3.0}).alarm_c
    3.0
    """
    mode, margin = _KIND_MODES.get(kind or "", ("none", 0.0))
    if overrides and "mode" in overrides:
        mode = str(overrides["mode"])  # type: ignore[assignment]
    if mode == "hot":
        base = Thresholds(
            mode="hot",
            legal_limit_c=pack.hot_limit_c,
            alarm_c=pack.hot_limit_c + margin,
            breach_delay_s=pack.hot_allowance_s,
        )
    elif mode == "cold":
        base = Thresholds(
            mode="cold",
            legal_limit_c=pack.cold_limit_c,
            alarm_c=min(pack.cold_target_c, pack.cold_limit_c) - margin,
            breach_delay_s=pack.cold_allowance_s,
        )
    elif mode == "cooling":
        base = Thresholds(
            mode="cooling",
            legal_limit_c=pack.cold_limit_c,
            alarm_c=pack.cold_limit_c,
            breach_delay_s=0.0,
            cooling_from_c=pack.cooling_from_c,
            cooling_stages=pack.cooling_stages,
        )
    else:
        base = Thresholds(mode="none", legal_limit_c=0.0, alarm_c=0.0, breach_delay_s=0.0)
    numeric = {k: float(v) for k, v in (overrides or {}).items() if k != "mode"}
    unknown = set(numeric) - {
        "legal_limit_c",
        "alarm_c",
        "breach_delay_s",
        "alarm_delay_s",
        "silence_s",
        "evidence_interval_s",
        "probe_accuracy_c",
    }
    if unknown:
        raise ValueError(f"unknown threshold override(s): {sorted(unknown)}")
    return replace(base, **numeric)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Reading:
    """One temperature reading of a probe, in °C, at ``at`` (unix seconds)."""

    value_c: float
    at: float


#: Why a reading is kept as evidence: a routine ``interval`` sample, an ``excursion`` beyond
#: the legal limit, or a compliance event about the measurement itself (SPEC guarantee 7):
#: a probe that went silent or whose device went offline (the last value it gave), and a
#: probe accuracy check against a reference (``probe_check``: the probe's value, the
#: reference in ``limit_c``; recorded whether it passed or not), and two probes of one unit
#: disagreeing by more than the probe accuracy (``probe_disagreement``: each probe's value).
EvidenceReason = Literal[
    "interval", "excursion", "probe_silent", "device_offline", "probe_check", "probe_disagreement"
]


@dataclass(frozen=True, slots=True)
class Evidence:
    """A HACCP evidence record: the actual value, when, which device and probe, and why."""

    device_id: str
    probe: str
    value_c: float
    measured_at: float
    reason: EvidenceReason
    limit_c: float | None = None
    alert_id: str | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """An alert to raise. ``alert_id`` is derived from kind, device and episode start, so the
    same episode evaluated twice (e.g. after a restart) is one alert."""

    kind: str
    severity: Severity
    message: str
    value: float | None
    limit: float | None
    episode_start: float
    corrective_action: str | None = None

    def alert_id(self, device_id: str, probe: str) -> str:
        return f"{self.kind}:{device_id}:{probe}:{int(self.episode_start)}"


@dataclass(frozen=True, slots=True)
class ProbeState:
    """What the monitor remembers of one probe between readings."""

    last: Reading | None = None
    breach_since: float | None = None
    alarm_since: float | None = None
    cooling_since: float | None = None
    cooling_stage: int = 0
    last_evidence_at: float | None = None
    #: Alert kinds raised in the current episode of each condition (not raised again).
    raised: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The monitor's decision for one probe at ``now``."""

    state: ProbeState
    alerts: tuple[AlertDecision, ...] = ()
    cleared: tuple[str, ...] = ()
    evidence: tuple[tuple[float, Literal["interval", "excursion"], float | None], ...] = ()


def _with_last(state: ProbeState, reading: Reading) -> ProbeState:
    """``state`` with ``reading`` as its last one. Every reading comes through here, so the
    state is built directly: :func:`dataclasses.replace` costs twice as much."""
    return ProbeState(
        last=reading,
        breach_since=state.breach_since,
        alarm_since=state.alarm_since,
        cooling_since=state.cooling_since,
        cooling_stage=state.cooling_stage,
        last_evidence_at=state.last_evidence_at,
        raised=state.raised,
    )


def _beyond(value: float, limit: float, mode: Mode) -> bool:
    return value > limit if mode in ("cold", "cooling") else value < limit


def evaluate(
    state: ProbeState, thresholds: Thresholds, *, now: float, reading: Reading | None
) -> Outcome:
    """One evaluation of a probe: with a new ``reading``, or a timer tick (``reading=None``).

    Evidence is returned as ``(value_c, reason, limit_c)`` tuples measured at the reading's time
    (the caller adds device and probe).
    """
    alerts: list[AlertDecision] = []
    cleared: list[str] = []
    evidence: list[tuple[float, Literal["interval", "excursion"], float | None]] = []
    t = thresholds
    if reading is not None:
        state = _with_last(state, reading)
        if "probe_silent" in state.raised:
            state = replace(state, raised=state.raised - {"probe_silent"})
            cleared.append("probe_silent")
    last = state.last
    if last is None:
        return Outcome(state=state)

    if reading is not None and t.mode in ("cold", "hot"):
        state = _holding_on_reading(state, t, reading, evidence, cleared)
    if reading is not None and t.mode == "cooling":
        state = _cooling_on_reading(state, t, reading, cleared)
    if t.mode in ("cold", "hot"):
        state = _holding_timers(state, t, now, alerts)
    if t.mode == "cooling":
        state = _cooling_timers(state, t, now, alerts)

    if reading is not None and t.mode != "none":
        due = state.last_evidence_at is None or reading.at - state.last_evidence_at >= (
            t.evidence_interval_s
        )
        if due and not any(r == "excursion" for _, r, _ in evidence):
            evidence.append((reading.value_c, "interval", t.legal_limit_c))
        if evidence:
            state = replace(state, last_evidence_at=reading.at)

    if now - last.at > t.silence_s and "probe_silent" not in state.raised and t.mode != "none":
        alerts.append(
            AlertDecision(
                kind="probe_silent",
                severity="warning",
                message=f"no reading for {now - last.at:.0f} s (limit {t.silence_s:.0f} s)",
                value=None,
                limit=t.silence_s,
                episode_start=last.at,
            )
        )
        state = replace(state, raised=state.raised | {"probe_silent"})
    return Outcome(
        state=state, alerts=tuple(alerts), cleared=tuple(cleared), evidence=tuple(evidence)
    )


def _holding_on_reading(
    state: ProbeState,
    t: Thresholds,
    reading: Reading,
    evidence: list[tuple[float, Literal["interval", "excursion"], float | None]],
    cleared: list[str],
) -> ProbeState:
    kind = f"{t.mode}_holding"
    if _beyond(reading.value_c, t.legal_limit_c, t.mode):
        # Every reading of an excursion is evidence: it is the record an inspector reads.
        evidence.append((reading.value_c, "excursion", t.legal_limit_c))
        if state.breach_since is None:
            state = replace(state, breach_since=reading.at)
    else:
        if state.breach_since is not None:
            evidence.append((reading.value_c, "excursion", t.legal_limit_c))  # back in limits
        # Also clears an alert carried over from before a restart (no breach_since then).
        if f"{kind}_breach" in state.raised:
            cleared.append(f"{kind}_breach")
            state = replace(state, raised=state.raised - {f"{kind}_breach"})
        if state.breach_since is not None:
            state = replace(state, breach_since=None)
    if _beyond(reading.value_c, t.alarm_c, t.mode):
        if state.alarm_since is None:
            state = replace(state, alarm_since=reading.at)
    else:
        if f"{kind}_alarm" in state.raised:
            cleared.append(f"{kind}_alarm")
            state = replace(state, raised=state.raised - {f"{kind}_alarm"})
        if state.alarm_since is not None:
            state = replace(state, alarm_since=None)
    return state


def _holding_timers(
    state: ProbeState, t: Thresholds, now: float, alerts: list[AlertDecision]
) -> ProbeState:
    kind = f"{t.mode}_holding"
    assert state.last is not None
    value = state.last.value_c
    if (
        state.breach_since is not None
        and now - state.breach_since >= t.breach_delay_s
        and f"{kind}_breach" not in state.raised
    ):
        alerts.append(
            AlertDecision(
                kind=f"{kind}_breach",
                severity="critical",
                message=(
                    f"{t.mode} holding out of the legal limit {t.legal_limit_c:g} °C for "
                    f"{now - state.breach_since:.0f} s (reading {value:.1f} °C)"
                ),
                value=value,
                limit=t.legal_limit_c,
                episode_start=state.breach_since,
                corrective_action="check_food_and_discard_or_move",
            )
        )
        state = replace(state, raised=state.raised | {f"{kind}_breach"})
    if (
        state.alarm_since is not None
        and now - state.alarm_since >= t.alarm_delay_s
        and f"{kind}_alarm" not in state.raised
    ):
        alerts.append(
            AlertDecision(
                kind=f"{kind}_alarm",
                severity="warning",
                message=f"{t.mode} holding past the alarm threshold {t.alarm_c:g} °C",
                value=value,
                limit=t.alarm_c,
                episode_start=state.alarm_since,
            )
        )
        state = replace(state, raised=state.raised | {f"{kind}_alarm"})
    return state


def _cooling_on_reading(
    state: ProbeState, t: Thresholds, reading: Reading, cleared: list[str]
) -> ProbeState:
    if state.cooling_since is None:
        if reading.value_c <= t.cooling_from_c and reading.value_c > t.legal_limit_c:
            # Cooling starts when the food passes below the hot-holding temperature.
            return replace(state, cooling_since=reading.at, cooling_stage=0)
        return state
    if reading.value_c > t.cooling_from_c:
        # Reheated above the start: the reheat branch; cooling starts over on the way down.
        kinds = {f"cooling_stage_{n + 1}_missed" for n in range(len(t.cooling_stages))}
        cleared.extend(sorted(kinds & state.raised))
        return replace(state, cooling_since=None, cooling_stage=0, raised=state.raised - kinds)
    stage = state.cooling_stage
    while stage < len(t.cooling_stages) and reading.value_c <= t.cooling_stages[stage].to_c:
        stage += 1
    if stage >= len(t.cooling_stages):
        return replace(state, cooling_since=None, cooling_stage=0)
    return replace(state, cooling_stage=stage)


def _cooling_timers(
    state: ProbeState, t: Thresholds, now: float, alerts: list[AlertDecision]
) -> ProbeState:
    if state.cooling_since is None or state.cooling_stage >= len(t.cooling_stages):
        return state
    stage = t.cooling_stages[state.cooling_stage]
    kind = f"cooling_stage_{state.cooling_stage + 1}_missed"
    if now - state.cooling_since >= stage.within_s and kind not in state.raised:
        assert state.last is not None
        alerts.append(
            AlertDecision(
                kind=kind,
                severity="critical",
                message=(
                    f"cooling did not reach {stage.to_c:g} °C within {stage.within_s / HOUR:g} h "
                    f"(reading {state.last.value_c:.1f} °C): {stage.if_missed}"
                ),
                value=state.last.value_c,
                limit=stage.to_c,
                episode_start=state.cooling_since,
                corrective_action=stage.if_missed,
            )
        )
        state = replace(state, raised=state.raised | {kind})
    return state


def check_core_temperature(
    *, core_temp_c: float | None, min_core_temp_c: float | None, at: float
) -> AlertDecision | None:
    """A cook step's core temperature against the step's minimum; ``None`` when it passes.

    A missing reading on a step that has a minimum is itself a failure: no evidence, no pass.

    >>> check_core_temperature(core_temp_c=70.0, min_core_temp_c=74.0, at=0).kind
    'cook_core_temp_low'
    >>> check_core_temperature(core_temp_c=75.0, min_core_temp_c=74.0, at=0) is None
    True
    """
    if min_core_temp_c is None:
        return None
    if core_temp_c is not None and core_temp_c >= min_core_temp_c:
        return None
    reading = "no core temperature reported" if core_temp_c is None else f"{core_temp_c:.1f} °C"
    return AlertDecision(
        kind="cook_core_temp_low",
        severity="critical",
        message=f"core temperature below {min_core_temp_c:g} °C: {reading}",
        value=core_temp_c,
        limit=min_core_temp_c,
        episode_start=at,
        corrective_action="continue_cooking_and_recheck",
    )


def check_probe_accuracy(
    *, reading_c: float, reference_c: float, accuracy_c: float, at: float
) -> AlertDecision | None:
    """A probe accuracy check (e.g. the ice-point check: probe in iced water, reference 0 °C):
    a probe off by more than ``accuracy_c`` (±1 °C by default) cannot prove a limit, so its
    readings are suspect until it is recalibrated or replaced. ``None`` when it passes.

    >>> check_probe_accuracy(reading_c=0.4, reference_c=0.0, accuracy_c=1.0, at=0.0) is None
    True
    >>> check_probe_accuracy(reading_c=1.6, reference_c=0.0, accuracy_c=1.0, at=0.0).kind
    'probe_inaccurate'
    """
    error = reading_c - reference_c
    if abs(error) <= accuracy_c:
        return None
    return AlertDecision(
        kind="probe_inaccurate",
        severity="warning",
        message=(
            f"probe reads {reading_c:.1f} °C against a reference of {reference_c:.1f} °C "
            f"(off by {error:+.1f} °C, accuracy ±{accuracy_c:.1f} °C)"
        ),
        value=reading_c,
        limit=reference_c,
        episode_start=at,
        corrective_action="recalibrate_or_replace_probe",
    )


def probe_spread(readings: Sequence[Reading], *, now: float, max_age_s: float) -> float | None:
    """The spread (max - min, °C) of the readings no older than ``max_age_s``; ``None`` with
    fewer than two fresh ones (nothing to compare).

    >>> probe_spread([Reading(3.0, 0.0), Reading(4.5, 1.0)], now=2.0, max_age_s=60.0)
    1.5
    """
    fresh = [r.value_c for r in readings if now - r.at <= max_age_s]
    if len(fresh) < 2:
        return None
    return max(fresh) - min(fresh)


def probe_disagreement_alert(
    *, spread_c: float, accuracy_c: float, at: float
) -> AlertDecision | None:
    """Two probes of one unit (its own sensor and a reference probe placed in it) that differ
    by more than ``accuracy_c`` (±1 °C): at least one of them is wrong, so neither proves a
    limit until it is checked. ``None`` when they agree within the accuracy."""
    if spread_c <= accuracy_c:
        return None
    return AlertDecision(
        kind="probe_disagreement",
        severity="warning",
        message=f"probes of one unit differ by {spread_c:.1f} °C (accuracy ±{accuracy_c:.1f} °C)",
        value=spread_c,
        limit=accuracy_c,
        episode_start=at,
        corrective_action="check_probes_against_a_reference",
    )


def device_offline_alert(
    *, offline_since: float, now: float, delay_s: float
) -> AlertDecision | None:
    """An alert once a monitored device has been offline for ``delay_s``."""
    if now - offline_since < delay_s:
        return None
    return AlertDecision(
        kind="device_offline",
        severity="warning",
        message=f"device offline for {now - offline_since:.0f} s: its readings are missing",
        value=None,
        limit=delay_s,
        episode_start=offline_since,
    )


__all__ = [
    "RULE_PACKS",
    "AlertDecision",
    "CoolingStage",
    "Evidence",
    "EvidenceReason",
    "Outcome",
    "ProbeState",
    "Reading",
    "RulePack",
    "Thresholds",
    "check_core_temperature",
    "check_probe_accuracy",
    "device_offline_alert",
    "evaluate",
    "probe_disagreement_alert",
    "probe_spread",
    "thresholds_for",
]
