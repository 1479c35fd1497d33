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
from dataclasses import dataclass, field

from edge_agent.readings import ReadingIn
from edge_agent.safety import (
    RULE_PACKS,
    AlertDecision,
    Evidence,
    ProbeState,
    Reading,
    RulePack,
    Thresholds,
    check_core_temperature,
    device_offline_alert,
    evaluate,
    thresholds_for,
)
from protocol import AlertRaised

#: Readings in these units are temperatures the rules look at (links convert °F to °C).
TEMPERATURE_UNITS = frozenset({"C"})
#: Metrics that are temperatures but not of food or air (a set point is an intention).
IGNORED_METRICS = frozenset({"setpoint", "setpoint_c"})

__all__ = ["RULE_PACKS", "Actions", "SafetyMonitor"]


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
    ) -> None:
        self.pack = pack
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
                state = self._probes.get(key, ProbeState())
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
        if reading.unit not in TEMPERATURE_UNITS or reading.metric in IGNORED_METRICS:
            return Actions()
        thresholds = self.thresholds(reading.device_id)
        if thresholds.mode == "none":
            return Actions()
        with self._lock:
            return self._evaluate(
                reading.device_id,
                reading.metric,
                thresholds,
                reading.at,
                Reading(value_c=reading.value, at=reading.at),
            )

    def tick(self, now: float) -> Actions:
        """Timers: delays elapsing without new readings, silent probes, devices offline."""
        actions = Actions()
        with self._lock:
            for device_id, probe in list(self._probes):
                actions.extend(
                    self._evaluate(device_id, probe, self.thresholds(device_id), now, None)
                )
            for device_id, since in self._offline_since.items():
                key = (device_id, "-", "device_offline")
                if key in self._open:
                    continue
                decision = device_offline_alert(
                    offline_since=since, now=now, delay_s=self._offline_alert_s
                )
                if decision is not None:
                    actions.alerts.append(self._alert(device_id, "-", decision, []))
        return actions

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
    ) -> Actions:
        key = (device_id, probe)
        outcome = evaluate(
            self._probes.get(key, ProbeState()), thresholds, now=now, reading=reading
        )
        self._probes[key] = outcome.state
        actions = Actions()
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
            proof = (
                [
                    Evidence(
                        device_id=device_id,
                        probe=probe,
                        value_c=decision.value,
                        measured_at=measured,
                        reason="excursion",
                        limit_c=decision.limit,
                        alert_id=decision.alert_id(device_id, probe),
                    )
                ]
                if decision.value is not None
                else []
            )
            actions.alerts.append(self._alert(device_id, probe, decision, proof))
        actions.evidence += evidence
        return actions

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
