"""The food-safety monitor: the pure rules of :mod:`edge_agent.safety` applied to live probes.

It keeps one :class:`~edge_agent.safety.ProbeState` per ``(device, metric)`` that reads a
temperature, resolves each device's :class:`~edge_agent.safety.Thresholds` from its kind, the
kitchen's rule pack and the per-equipment overrides, and turns decisions into
:class:`Actions` for the ingest loop to persist (alerts with their evidence in one transaction).
It never talks to the network, so alerts are raised the same whether the control plane is
reachable or not. Thread-safe: the ingest thread feeds readings, an apscheduler job ticks it.

>>> monitor = SafetyMonitor(pack=RULE_PACKS["us_fda_food_code_2022"], kind_of=lambda d: "fridge")
>>> actions = monitor.on_reading(ReadingIn("fridge-1", "air_temp", "C", 3.0, at=0.0))
>>> [e.reason for e in actions.evidence]
['interval']
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from edge_agent.readings import ReadingIn
from edge_agent.safety import (
    RULE_PACKS,
    AlertDecision,
    Evidence,
    EvidenceReason,
    ProbeState,
    Reading,
    RulePack,
    Thresholds,
    check_core_temperature,
    check_probe_accuracy,
    device_offline_alert,
    evaluate,
    probe_disagreement_alert,
    probe_spread,
    thresholds_for,
)
from protocol import AlertRaised

#: Readings in these units are temperatures the rules look at (links convert °F to °C).
TEMPERATURE_UNITS = frozenset({"C"})
#: Metrics that are temperatures but not of food or air (a set point is an intention).
IGNORED_METRICS = frozenset({"setpoint", "setpoint_c"})

__all__ = ["RULE_PACKS", "Actions", "SafetyMonitor"]

#: The state of a probe before its first reading (immutable, so one instance serves all).
_NEVER_READ = ProbeState()


@dataclass
class Actions:
    """What the monitor decided: alerts (each with its evidence), evidence, cleared alerts."""

    alerts: list[tuple[AlertRaised, list[Evidence]]] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)

    def extend(self, other: Actions) -> None:
        self.alerts += other.alerts
        self.evidence += other.evidence
        self.cleared += other.cleared

    def __bool__(self) -> bool:
        return bool(self.alerts or self.evidence or self.cleared)


class SafetyMonitor:
    """Live food-safety state of a kitchen's probes and equipment."""

    def __init__(
        self,
        *,
        pack: RulePack,
        kind_of: Callable[[str], str | None],
        overrides: Mapping[str, Mapping[str, float | str]] | None = None,
        offline_alert_s: float = 300.0,
        placements: Mapping[str, str] | None = None,
        cross_check_age_s: float = 60.0,
    ) -> None:
        self.pack = pack
        #: Reference probes placed in a unit: probe device -> (unit, unit's probe or None for
        #: all of them), from ``"fridge-1"`` or ``"fridge-1/air_temp"``.
        self._placements: list[tuple[str, str, str | None]] = []
        for probe_device, where in (placements or {}).items():
            unit, _, metric = where.partition("/")
            self._placements.append((probe_device, unit, metric or None))
        self._cross_check_age_s = cross_check_age_s
        self._kind_of = kind_of
        self._overrides = dict(overrides or {})
        self._offline_alert_s = offline_alert_s
        self._lock = threading.Lock()
        self._probes: dict[tuple[str, str], ProbeState] = {}
        self._open: dict[tuple[str, str, str], str] = {}  # (device, probe, kind) -> alert id
        self._offline_since: dict[str, float] = {}
        self._thresholds: dict[str, tuple[str | None, Thresholds]] = {}

    def thresholds(self, device_id: str) -> Thresholds:
        """The device's thresholds, cached per (device, kind): readings come thousands a second."""
        kind = self._kind_of(device_id)
        cached = self._thresholds.get(device_id)
        if cached is not None and cached[0] == kind:
            return cached[1]
        thresholds = thresholds_for(kind, self.pack, self._overrides.get(device_id))
        self._thresholds[device_id] = (kind, thresholds)
        return thresholds

    def seed_open_alerts(self, alert_ids: Iterable[str]) -> None:
        """Alerts still open in the store (from before a restart) are not raised again."""
        with self._lock:
            for alert_id in alert_ids:
                parts = alert_id.split(":")
                if len(parts) != 4:
                    continue
                kind, device_id, probe, _start = parts
                self._open[(device_id, probe, kind)] = alert_id
                key = (device_id, probe)
                state = self._probes.get(key, _NEVER_READ)
                self._probes[key] = ProbeState(
                    last=state.last,
                    breach_since=state.breach_since,
                    alarm_since=state.alarm_since,
                    cooling_since=state.cooling_since,
                    cooling_stage=state.cooling_stage,
                    last_evidence_at=state.last_evidence_at,
                    raised=state.raised | {kind},
                )

    def on_reading(self, reading: ReadingIn) -> Actions:
        """One reading: an interval sample or an excursion kept, an alert raised or cleared."""
        return self.on_readings((reading,))

    def on_readings(self, readings: Iterable[ReadingIn]) -> Actions:
        """Readings in the order they came, as :meth:`on_reading` one by one would judge them,
        into one :class:`Actions`: the ingest loop hands a flush's worth at a time, so the
        lock is taken once and each device's thresholds are looked up once per batch."""
        actions = Actions()
        thresholds_of: dict[str, Thresholds] = {}
        with self._lock:
            for reading in readings:
                if reading.unit not in TEMPERATURE_UNITS or reading.metric in IGNORED_METRICS:
                    continue
                thresholds = thresholds_of.get(reading.device_id)
                if thresholds is None:
                    thresholds = thresholds_of[reading.device_id] = self.thresholds(
                        reading.device_id
                    )
                if thresholds.mode == "none" and not self._placements:
                    continue
                self._judge(reading, thresholds, actions)
        return actions

    def _judge(self, reading: ReadingIn, thresholds: Thresholds, actions: Actions) -> None:
        value = Reading(value_c=reading.value, at=reading.at)
        if thresholds.mode != "none":
            self._evaluate(
                reading.device_id, reading.metric, thresholds, reading.at, value, actions
            )
        elif any(placed == reading.device_id for placed, _, _ in self._placements):
            # A reference probe checks a unit; its own readings are compared, not judged.
            key = (reading.device_id, reading.metric)
            self._probes[key] = replace(self._probes.get(key, _NEVER_READ), last=value)
        else:
            return
        if self._placements:
            self._cross_check(reading.device_id, reading.at, actions)

    def _cross_check(self, device_id: str, now: float, actions: Actions) -> None:
        """Compare the probes of each unit ``device_id`` takes part in (as the unit or as the
        reference probe placed in it): more than the unit's ``probe_accuracy_c`` apart raises
        ``probe_disagreement`` with every probe's last reading as evidence; back within it
        clears the alert. What it decides is added to ``actions``."""
        for placed, unit, metric in self._placements:
            if device_id not in (placed, unit):
                continue
            members = [
                (device, probe, state.last)
                for (device, probe), state in self._probes.items()
                if state.last is not None
                and (device == placed or (device == unit and metric in (None, probe)))
            ]
            spread = probe_spread(
                [last for _, _, last in members], now=now, max_age_s=self._cross_check_age_s
            )
            if spread is None:
                continue
            open_key = (unit, placed, "probe_disagreement")
            decision = probe_disagreement_alert(
                spread_c=spread, accuracy_c=self.thresholds(unit).probe_accuracy_c, at=now
            )
            if decision is None:
                alert_id = self._open.pop(open_key, None)
                if alert_id is not None:
                    actions.cleared.append(alert_id)
                continue
            if open_key in self._open:
                continue
            alert_id = decision.alert_id(unit, placed)
            proof = [
                Evidence(
                    device_id=device,
                    probe=probe,
                    value_c=last.value_c,
                    measured_at=last.at,
                    reason="probe_disagreement",
                    alert_id=alert_id,
                )
                for device, probe, last in members
                if now - last.at <= self._cross_check_age_s
            ]
            actions.alerts.append(self._alert(unit, placed, decision, proof))

    def tick(self, now: float) -> Actions:
        """Timers: delays elapsing without new readings, silent probes, devices offline."""
        actions = Actions()
        with self._lock:
            for device_id, probe in list(self._probes):
                self._evaluate(device_id, probe, self.thresholds(device_id), now, None, actions)
            for device_id, since in self._offline_since.items():
                key = (device_id, "-", "device_offline")
                if key in self._open:
                    continue
                decision = device_offline_alert(
                    offline_since=since, now=now, delay_s=self._offline_alert_s
                )
                if decision is not None:
                    proof = self._last_readings(
                        device_id, "device_offline", decision.alert_id(device_id, "-")
                    )
                    actions.alerts.append(self._alert(device_id, "-", decision, proof))
        return actions

    def on_probe_check(
        self,
        *,
        device_id: str,
        probe: str,
        reading_c: float,
        reference_c: float,
        badge: str | None,
        at: float,
    ) -> Actions:
        """An accuracy check of a probe against a reference (e.g. iced water, 0 °C): always
        kept as evidence (``probe_check``, the reference as its limit, the badge as actor);
        off by more than the device's ``probe_accuracy_c`` (±1 °C) it also raises
        ``probe_inaccurate``, whose evidence it is."""
        accuracy = self.thresholds(device_id).probe_accuracy_c
        decision = check_probe_accuracy(
            reading_c=reading_c, reference_c=reference_c, accuracy_c=accuracy, at=at
        )
        record = Evidence(
            device_id=device_id,
            probe=probe,
            value_c=reading_c,
            measured_at=at,
            reason="probe_check",
            limit_c=reference_c,
            alert_id=None if decision is None else decision.alert_id(device_id, probe),
            actor=badge,
        )
        actions = Actions()
        with self._lock:
            if decision is None:
                actions.evidence.append(record)
                alert_id = self._open.pop((device_id, probe, "probe_inaccurate"), None)
                if alert_id is not None:
                    actions.cleared.append(alert_id)  # a passing re-check after recalibration
            else:
                actions.alerts.append(self._alert(device_id, probe, decision, [record]))
        return actions

    def _last_readings(
        self, device_id: str, reason: EvidenceReason, alert_id: str
    ) -> list[Evidence]:
        """The last reading of each of ``device_id``'s probes, as evidence of why its record
        stops there (a silent probe, a device gone offline)."""
        return [
            Evidence(
                device_id=device_id,
                probe=probe,
                value_c=state.last.value_c,
                measured_at=state.last.at,
                reason=reason,
                alert_id=alert_id,
            )
            for (device, probe), state in self._probes.items()
            if device == device_id and state.last is not None
        ]

    def on_device_status(self, device_id: str, *, online: bool, at: float) -> Actions:
        actions = Actions()
        with self._lock:
            if not online:
                self._offline_since.setdefault(device_id, at)
                return actions
            self._offline_since.pop(device_id, None)
            alert_id = self._open.pop((device_id, "-", "device_offline"), None)
            if alert_id is not None:
                actions.cleared.append(alert_id)
        return actions

    def check_cook_step(
        self,
        *,
        device_id: str | None,
        core_temp_c: float | None,
        min_core_temp_c: float | None,
        at: float,
        task_id: str,
        step: int,
    ) -> AlertRaised | None:
        """The core-temperature check of a finished cook step (``None`` when it passes)."""
        decision = check_core_temperature(
            core_temp_c=core_temp_c, min_core_temp_c=min_core_temp_c, at=at
        )
        if decision is None:
            return None
        return AlertRaised(
            alert_id=f"{decision.kind}:{task_id}:s{step}",
            kind=decision.kind,
            severity=decision.severity,
            device_id=device_id,
            message=f"task {task_id} step {step}: {decision.message}",
            value=decision.value,
            limit=decision.limit,
        )

    def _evaluate(
        self,
        device_id: str,
        probe: str,
        thresholds: Thresholds,
        now: float,
        reading: Reading | None,
        actions: Actions,
    ) -> None:
        """Run the pure rules on one probe; what they decide is added to ``actions``."""
        key = (device_id, probe)
        outcome = evaluate(self._probes.get(key, _NEVER_READ), thresholds, now=now, reading=reading)
        self._probes[key] = outcome.state
        if not (outcome.evidence or outcome.cleared or outcome.alerts):
            return  # the usual reading: nothing to keep, raise or clear
        measured = reading.at if reading is not None else now
        evidence = [
            Evidence(
                device_id=device_id,
                probe=probe,
                value_c=value,
                measured_at=measured,
                reason=reason,
                limit_c=limit,
                alert_id=self._open.get((device_id, probe, f"{thresholds.mode}_holding_breach"))
                if reason == "excursion"
                else None,
            )
            for value, reason, limit in outcome.evidence
        ]
        for kind in outcome.cleared:
            alert_id = self._open.pop((device_id, probe, kind), None)
            if alert_id is not None:
                actions.cleared.append(alert_id)
        for decision in outcome.alerts:
            proof: list[Evidence] = []
            last = outcome.state.last
            if decision.value is not None:
                proof.append(
                    Evidence(
                        device_id=device_id,
                        probe=probe,
                        value_c=decision.value,
                        measured_at=measured,
                        reason="excursion",
                        limit_c=decision.limit,
                        alert_id=decision.alert_id(device_id, probe),
                    )
                )
            elif decision.kind == "probe_silent" and last is not None:
                # A silent probe is a compliance event: the record says where it stopped.
                proof.append(
                    Evidence(
                        device_id=device_id,
                        probe=probe,
                        value_c=last.value_c,
                        measured_at=last.at,
                        reason="probe_silent",
                        limit_c=thresholds.legal_limit_c,
                        alert_id=decision.alert_id(device_id, probe),
                    )
                )
            actions.alerts.append(self._alert(device_id, probe, decision, proof))
        actions.evidence += evidence

    def _alert(
        self, device_id: str, probe: str, decision: AlertDecision, proof: list[Evidence]
    ) -> tuple[AlertRaised, list[Evidence]]:
        alert_id = decision.alert_id(device_id, probe)
        self._open[(device_id, probe, decision.kind)] = alert_id
        message = decision.message
        if decision.corrective_action:
            message = f"{message}; corrective action needed: {decision.corrective_action}"
        alert = AlertRaised(
            alert_id=alert_id,
            kind=decision.kind,
            severity=decision.severity,
            device_id=device_id,
            message=message[:512],
            value=decision.value,
            limit=decision.limit,
        )
        return alert, proof
