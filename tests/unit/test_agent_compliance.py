"""Probe accuracy and silent or offline probes as HACCP compliance events (SPEC guarantee 7):
the pure rule, the monitor's evidence, and what the store numbers into the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.executor import EventRecord
from edge_agent.ingest import Ingest
from edge_agent.links.mqtt import _probe_check
from edge_agent.monitor import SafetyMonitor
from edge_agent.readings import Observed, ProbeCheck, ReadingIn, StatusSeen
from edge_agent.safety import (
    RULE_PACKS,
    Evidence,
    Reading,
    check_probe_accuracy,
    probe_disagreement_alert,
    probe_spread,
)
from edge_agent.store import Store
from protocol import DeviceEvent
from protocol.events import EventType, HaccpEvidence

T0 = 1_767_225_600.0
KINDS = {"fridge-1": "fridge"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "agent.db", boot_id="b") as opened:
        yield opened


def monitor() -> SafetyMonitor:
    return SafetyMonitor(
        pack=RULE_PACKS["us_fda_food_code_2022"], kind_of=KINDS.get, offline_alert_s=300
    )


def fridge_reading(value_c: float, at: float, probe: str = "air_temp") -> ReadingIn:
    return ReadingIn("fridge-1", probe, "C", value_c, at=at)


@given(
    reference=st.floats(-50, 150),
    error=st.floats(-5, 5),
    accuracy=st.floats(0.1, 2.0),
)
def test_a_probe_check_fails_exactly_when_the_error_exceeds_the_accuracy(
    reference: float, error: float, accuracy: float
) -> None:
    """Within ±accuracy of the reference passes; beyond it is ``probe_inaccurate``."""
    reading = reference + error
    decision = check_probe_accuracy(
        reading_c=reading, reference_c=reference, accuracy_c=accuracy, at=T0
    )
    assert (decision is None) == (abs(reading - reference) <= accuracy)
    if decision is not None:
        assert decision.kind == "probe_inaccurate" and decision.limit == reference


def test_a_probe_off_by_more_than_one_degree_raises_an_alert_with_its_check_as_evidence() -> None:
    """Iced water read as 1.4 °C: a warning that needs recalibration, the check its evidence."""
    actions = monitor().on_probe_check(
        device_id="fridge-1", probe="air_temp", reading_c=1.4, reference_c=0.0, badge="b-1", at=T0
    )
    [(alert, proof)] = actions.alerts
    assert alert.kind == "probe_inaccurate" and alert.severity == "warning"
    assert "recalibrate_or_replace_probe" in alert.message
    assert [(e.reason, e.value_c, e.limit_c, e.actor, e.alert_id) for e in proof] == [
        ("probe_check", 1.4, 0.0, "b-1", alert.alert_id)
    ]


def test_a_passing_probe_check_is_evidence_and_closes_an_open_inaccuracy_alert() -> None:
    """After recalibration a check within ±1 °C is kept as evidence and clears the alert."""
    safety = monitor()
    failed = safety.on_probe_check(
        device_id="fridge-1", probe="air_temp", reading_c=2.0, reference_c=0.0, badge=None, at=T0
    )
    passed = safety.on_probe_check(
        device_id="fridge-1", probe="air_temp", reading_c=0.3, reference_c=0.0, badge="b-2", at=T0
    )
    assert passed.alerts == []
    assert [(e.reason, e.actor) for e in passed.evidence] == [("probe_check", "b-2")]
    assert passed.cleared == [failed.alerts[0][0].alert_id]


def test_a_silent_probe_alert_carries_the_last_reading_as_evidence() -> None:
    """A probe silent past ``silence_s``: ``probe_silent`` with where its record stops."""
    safety = monitor()
    safety.on_reading(fridge_reading(3.2, T0))
    actions = safety.tick(T0 + 601)
    [(alert, proof)] = actions.alerts
    assert alert.kind == "probe_silent"
    assert [(e.reason, e.value_c, e.measured_at, e.alert_id) for e in proof] == [
        ("probe_silent", 3.2, T0, alert.alert_id)
    ]


def test_a_device_offline_alert_carries_each_probes_last_reading_as_evidence() -> None:
    """A fridge gone offline: ``device_offline`` with the last value of each of its probes."""
    safety = monitor()
    safety.on_reading(fridge_reading(3.0, T0, "air_temp"))
    safety.on_reading(fridge_reading(4.0, T0 + 1, "food_temp"))
    safety.on_device_status("fridge-1", online=False, at=T0 + 2)
    offline = [(a, p) for a, p in safety.tick(T0 + 302).alerts if a.kind == "device_offline"]
    [(alert, proof)] = offline
    assert sorted((e.probe, e.value_c, e.reason) for e in proof) == [
        ("air_temp", 3.0, "device_offline"),
        ("food_temp", 4.0, "device_offline"),
    ]
    assert {e.alert_id for e in proof} == {alert.alert_id}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_compliance_events_are_numbered_into_the_outbox_as_haccp_evidence(store: Store) -> None:
    """A probe check and a silent probe reach the outbox (priority lane, durable) as
    ``haccp.evidence`` with value, time, device, probe and the badge of who checked."""
    clock = Clock()
    ingest = Ingest(store=store, monitor=monitor(), clock=clock)
    ingest.submit(StatusSeen("fridge-1", "mqtt", T0, online=True, kind="fridge"))
    ingest.submit(Observed("fridge-1", "mqtt", 1, T0, (fridge_reading(3.0, T0),)))
    ingest.flush()
    ingest.submit(ProbeCheck("fridge-1", "air_temp", 0.2, 0.0, "b-9", T0 + 10))
    ingest.flush()
    clock.now = T0 + 700
    ingest.apply(ingest.monitor.tick(clock.now), at=clock.now)
    evidence = [
        reading
        for event in store.pending_events(limit=100)
        if event.type == EventType.HACCP_EVIDENCE
        for reading in HaccpEvidence.model_validate(event.payload).readings
    ]
    assert [(r.reason, r.value_c, r.actor) for r in evidence] == [
        ("interval", 3.0, None),
        ("probe_check", 0.2, "b-9"),
        ("probe_silent", 3.0, None),
    ]
    assert all(r.device_id == "fridge-1" and r.probe == "air_temp" for r in evidence)
    assert [e.reason for e in store.evidence()] == ["interval", "probe_check", "probe_silent"]


@pytest.mark.parametrize(
    "data",
    [
        {"reference_c": 0.0},
        {"reading_c": "warm", "reference_c": 0.0},
        {"reading_c": True, "reference_c": 0.0},
        {"reading_c": float("nan"), "reference_c": 0.0},
        {"reading_c": 0.1, "reference_c": 0.0, "probe": 3},
    ],
)
def test_a_probe_check_event_without_valid_values_is_refused(
    data: dict[str, str | float | bool | int],
) -> None:
    """Missing, non-numeric, boolean or non-finite values, or a non-text probe: no check."""
    event = DeviceEvent(device_id="fridge-1", seq=1, ts=T0, event="probe_check", data=data)
    assert _probe_check(event) is None


def test_a_probe_check_event_names_the_probe_value_reference_and_badge() -> None:
    """``probe_check`` data become a ProbeCheck (probe ``temp`` unless named)."""
    event = DeviceEvent(
        device_id="probe-1",
        seq=1,
        ts=T0,
        event="probe_check",
        data={"reading_c": 0.4, "reference_c": 0, "badge": "b-4"},
    )
    check = _probe_check(event)
    assert check is not None
    assert (check.device_id, check.probe, check.reading_c, check.reference_c, check.badge) == (
        "probe-1",
        "temp",
        0.4,
        0.0,
        "b-4",
    )


def test_haccp_evidence_is_never_dropped_by_the_disk_budget(store: Store) -> None:
    """Under a budget smaller than the store, routine summaries go; every evidence event and
    record stays, and new evidence is still recorded."""
    summary = {
        "device_id": "fridge-1",
        "metric": "air_temp",
        "unit": "C",
        "window_start": T0,
        "window_end": T0 + 60,
        "count": 1,
        "min": 3.0,
        "max": 3.0,
        "mean": 3.0,
        "last": 3.0,
    }
    store.append_routine(
        events=[EventRecord(type="readings.summary", payload=summary)] * 300, occurred_at=T0
    )
    kept = Evidence("fridge-1", "air_temp", 9.0, T0, "excursion", limit_c=5.0)
    store.record_evidence(readings=[kept], at=T0)
    store.enforce_disk_budget(budget_bytes=1)
    store.record_evidence(readings=[kept], at=T0 + 1)
    assert store.enforce_disk_budget(budget_bytes=1) == 0
    assert store.routine_depth() == 0
    assert [e.type for e in store.pending_events(limit=10)] == ["haccp.evidence"] * 2
    assert store.evidence() == [kept, kept]


@given(
    values=st.lists(st.floats(-30, 90), min_size=2, max_size=5),
    accuracy=st.floats(0.1, 2.0),
)
def test_probes_disagree_exactly_when_their_spread_exceeds_the_accuracy(
    values: list[float], accuracy: float
) -> None:
    """Fresh readings more than ±accuracy apart are ``probe_disagreement``; stale ones don't
    count."""
    fresh = [Reading(v, T0) for v in values]
    spread = probe_spread([*fresh, Reading(500.0, T0 - 61)], now=T0, max_age_s=60)
    assert spread == max(values) - min(values)
    decision = probe_disagreement_alert(spread_c=spread, accuracy_c=accuracy, at=T0)
    assert (decision is None) == (spread <= accuracy)


def placed_monitor() -> SafetyMonitor:
    return SafetyMonitor(
        pack=RULE_PACKS["us_fda_food_code_2022"],
        kind_of={"fridge-1": "fridge", "probe-1": "probe"}.get,
        placements={"probe-1": "fridge-1/air_temp"},
    )


def test_a_reference_probe_disagreeing_with_its_unit_raises_an_alert_with_both_readings() -> None:
    """Fridge sensor 3.0 °C, reference probe 4.5 °C: ``probe_disagreement`` with both as
    evidence; the probe back to 3.4 °C clears it."""
    safety = placed_monitor()
    safety.on_reading(fridge_reading(3.0, T0))
    actions = safety.on_reading(ReadingIn("probe-1", "temp", "C", 4.5, at=T0 + 1))
    [(alert, proof)] = actions.alerts
    assert (alert.kind, alert.device_id, alert.value) == ("probe_disagreement", "fridge-1", 1.5)
    assert sorted((e.device_id, e.probe, e.value_c, e.reason) for e in proof) == [
        ("fridge-1", "air_temp", 3.0, "probe_disagreement"),
        ("probe-1", "temp", 4.5, "probe_disagreement"),
    ]
    assert safety.on_reading(ReadingIn("probe-1", "temp", "C", 4.6, at=T0 + 2)).alerts == []
    cleared = safety.on_reading(ReadingIn("probe-1", "temp", "C", 3.4, at=T0 + 3))
    assert cleared.cleared == [alert.alert_id]


def test_probes_within_one_degree_or_without_a_fresh_pair_raise_nothing() -> None:
    """0.8 °C apart agrees; a reference reading with no recent unit reading is not compared."""
    safety = placed_monitor()
    assert safety.on_reading(ReadingIn("probe-1", "temp", "C", 9.0, at=T0)).alerts == []
    safety.on_reading(fridge_reading(3.0, T0 + 120))
    assert safety.on_reading(ReadingIn("probe-1", "temp", "C", 3.8, at=T0 + 121)).alerts == []


@pytest.mark.parametrize("where", ["", "fridge 1", "fridge-1/", "a/b/c"])
def test_a_malformed_probe_placement_is_a_config_error(where: str) -> None:
    """Placements name a unit, optionally ``/probe``; anything else fails validation."""
    with pytest.raises(ValidationError):
        AgentConfig.model_validate(
            {
                "agent_id": "agent-1",
                "kitchen_id": "k1",
                "credential": "credential-0123456789abcdef",
                "control_plane_url": "https://cp.example/",
                "data_dir": "/var/lib/brigade",
                "probe_placements": {"probe-1": where},
            }
        )
