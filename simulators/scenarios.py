"""Whole-day scenarios as data: what demand a run plays, what breaks when, what must hold.

A scenario is a row of :data:`SCENARIOS`: a slice of a kitchen day (``start_h``..``end_h``)
compressed into the run's ``--duration``, a demand profile, and a schedule of faults at fractions
of the run. Time compression is consistent: the demand curve, promise and transport times and
the holding equipment (fridges: their physics, telemetry and alarm delays) run on kitchen-day
time scaled by :class:`~simulators.demand.TimeCompression`; the menu's cooking steps last real
seconds, as the demo's do, so a batch cooks end to end in a short run.

:func:`build_report` turns what a run gathered into the JSON report; :mod:`simulators.scenario_run`
runs a scenario; ``brigade-sim scenario NAME`` is the CLI.

>>> sorted(SCENARIOS)[:3]
['agent-crash', 'broker-restart', 'clock-skew']
>>> SCENARIOS["partition"].faults[0].action
'partition'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from simulators.demand import DemandProfile, Rush, SkuShare, Spike, TimeCompression

#: The ``agent_id`` of alerts the control plane raises itself (docs/api.md, "Alerts"): SLA
#: alerts and operational ones such as ``low_stock``; every other alert comes from an agent.
CONTROL_PLANE_ACTOR = "control-plane"

Action = Literal[
    "partition",  # blackhole the kitchen's agent <-> control plane link (fault proxy)
    "heal",  # back to pass
    "slow_link",  # 300 ms per chunk on the agent's link
    "bus_reset",  # RST every device <-> broker connection of the kitchen, and new ones
    "bus_delay",  # 200 ms per chunk on the kitchen's device links
    "bus_half_open",  # devices' links forward to the broker but nothing comes back
    "bus_heal",
    "crash_agent",  # SIGKILL the kitchen's agent
    "start_agent",  # start it again
    "restart_agent",  # SIGKILL and start at once
    "kitchen_down",  # power cut: agent killed, devices drop off the broker
    "kitchen_up",
    "crash_broker",  # SIGKILL mosquitto
    "start_broker",
    "restart_broker",  # graceful stop and start
    "crash_control_plane",
    "start_control_plane",
    "fail_element",  # the target device's heating element / compressor dies
    "repair_element",
    "open_door",
    "close_door",
    "probe_stuck",  # the kitchen's serial probe sticks at its current value
    "probe_unplug",
    "probe_replug",
]


@dataclass(frozen=True, slots=True)
class TimedFault:
    """``action`` at ``at`` (a fraction of the load phase) on kitchen number ``kitchen``
    (1-based) and, for device faults, on device ``target``."""

    at: float
    action: Action
    kitchen: int = 1
    target: str = ""


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the SPEC guarantees in this scenario, checked by the independent evidence."""

    zero_duplicate_starts: bool = True
    zero_lost_events: bool = True
    #: Orders must be readied at all (a run where nothing cooks proves nothing).
    some_ready: bool = True
    #: A food-safety alert (agent alert or device alarm) must be raised.
    safety_alert: bool = False
    #: Device events that must show on the bus (e.g. the fault a scenario injects).
    device_events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the scenario table."""

    name: str
    summary: str
    #: Orders per kitchen-day hour *per kitchen* (scaled by the run's number of kitchens).
    demand: DemandProfile
    #: The hour of the day the run is centred on when it is too short for the whole day.
    focus_h: float = 12.5
    #: Kitchen-day seconds per real second: at 60, one real second is a kitchen minute, and a
    #: 16-hour day plays in 16 minutes.
    time_factor: float = 60.0
    faults: tuple[TimedFault, ...] = ()
    expect: Expectations = field(default_factory=Expectations)
    #: Seconds the agent's wall clock is off, per kitchen number (clock-skew).
    wall_clock_skew_s: tuple[tuple[int, float], ...] = ()
    min_kitchens: int = 1
    default_duration_s: float = 60.0
    #: Keep running to the end even when all work has drained (slow effects, e.g. a breach).
    run_to_end: bool = False


#: The scenario menu's SKU mix (ids of :data:`simulators.scenario_menu.SKUS`).
MIX = (
    SkuShare("roast-chicken", 3.0, "normal", 1, 3),
    SkuShare("veg-lasagne", 2.0, "normal", 1, 2),
    SkuShare("fries", 2.0, "high", 1, 2),
    SkuShare("caesar-salad", 1.5, "low", 1, 2),
)
#: A normal day, in orders per kitchen-day hour per kitchen.
DAY = DemandProfile(
    base_per_h=6.0,
    rushes=(Rush(12.5, 0.6, 18.0), Rush(19.0, 0.8, 14.0)),
    sku_mix=MIX,
    promise_min=(30.0, 60.0),
    transport_min=(5.0, 15.0),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "An ordinary lunch service, nothing breaks.", DAY),
        Scenario(
            "rush",
            "Lunch rush with a catering spike three times the normal rate: backpressure "
            "rejects early instead of delivering late.",
            DemandProfile(
                base_per_h=15.0,
                rushes=(Rush(12.5, 0.6, 60.0),),
                spikes=(Spike(12.3, 0.3, 3.0),),
                sku_mix=MIX,
                promise_min=(25.0, 50.0),
                transport_min=(5.0, 15.0),
            ),
        ),
        Scenario(
            "kitchen-offline",
            "Kitchen 1 loses power mid-service (agent and equipment gone) and comes back.",
            DAY,
            faults=(TimedFault(0.25, "kitchen_down"), TimedFault(0.65, "kitchen_up")),
            min_kitchens=2,
        ),
        Scenario(
            "partition",
            "Kitchen 1's WAN link is blackholed: it keeps cooking offline, buffers, and "
            "drains in order when the link is back.",
            DAY,
            faults=(TimedFault(0.25, "partition"), TimedFault(0.65, "heal")),
        ),
        Scenario(
            "agent-crash",
            "Kitchen 1's agent is SIGKILLed twice mid-cook and restarted: no batch starts twice.",
            DAY,
            faults=(
                TimedFault(0.3, "crash_agent"),
                TimedFault(0.35, "start_agent"),
                TimedFault(0.6, "restart_agent"),
            ),
        ),
        Scenario(
            "broker-restart",
            "The kitchen broker crashes and is restarted, later restarts gracefully: sessions "
            "and queued QoS 1 commands and acks survive.",
            DAY,
            faults=(
                TimedFault(0.3, "crash_broker"),
                TimedFault(0.38, "start_broker"),
                TimedFault(0.65, "restart_broker"),
            ),
        ),
        Scenario(
            "equipment-failure",
            "Oven 1 of kitchen 1 loses its heating element mid-service; it reports the fault, "
            "work moves to the other oven, the fridge door is left open for a while.",
            DAY,
            faults=(
                TimedFault(0.2, "fail_element", target="oven-1"),
                TimedFault(0.3, "open_door", target="fridge-1"),
                TimedFault(0.45, "close_door", target="fridge-1"),
                TimedFault(0.9, "repair_element", target="oven-1"),
            ),
            expect=Expectations(device_events=("element_fault",)),
        ),
        Scenario(
            "cooling-violation",
            "Kitchen 1's fridge compressor fails and its probe sticks: cold holding is breached "
            "and a food-safety alert must be raised, online or not.",
            DAY,
            faults=(
                TimedFault(0.05, "fail_element", target="fridge-1"),
                TimedFault(0.6, "probe_stuck"),
            ),
            expect=Expectations(safety_alert=True),
            run_to_end=True,
        ),
        Scenario(
            "clock-skew",
            "Kitchen 1's box clock is 15 minutes fast: start-by deadlines still hold, because "
            "the agent measures them on its monotonic clock.",
            DAY,
            wall_clock_skew_s=((1, 900.0),),
        ),
        Scenario(
            "device-links",
            "Kitchen 1's equipment links to the broker are reset, then slow, then half-open: "
            "devices reconnect and the agent re-sends, never starting a batch twice.",
            DAY,
            faults=(
                TimedFault(0.2, "bus_reset"),
                TimedFault(0.3, "bus_heal"),
                TimedFault(0.45, "bus_delay"),
                TimedFault(0.6, "bus_half_open"),
                TimedFault(0.7, "bus_heal"),
            ),
        ),
        Scenario(
            "control-plane-restart",
            "The control plane is SIGKILLed and restarted: accepted orders and acked events "
            "survive, agents buffer meanwhile.",
            DAY,
            faults=(
                TimedFault(0.35, "crash_control_plane"),
                TimedFault(0.45, "start_control_plane"),
            ),
        ),
    )
}


def window_for(scenario: Scenario, load_s: float) -> TimeCompression:
    """The slice of the kitchen day a load phase of ``load_s`` real seconds plays: centred on
    the scenario's focus hour, shifted to stay within opening hours, the whole day at most.

    >>> tc = window_for(SCENARIOS["normal"], 60.0)
    >>> (tc.start_h, tc.end_h, tc.factor)
    (12.0, 13.0, 60.0)
    """
    day = scenario.demand
    span_h = min(load_s * scenario.time_factor / 3600.0, day.close_h - day.open_h)
    start = min(max(scenario.focus_h - span_h / 2, day.open_h), day.close_h - span_h)
    return TimeCompression(start_h=start, end_h=start + span_h, run_s=load_s)


def scenario_named(name: str) -> Scenario:
    """The scenario ``name``; ``KeyError`` naming the ones that exist."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None


# -- the report ---------------------------------------------------------------------------------

REPORT_FIELDS = (
    "scenario",
    "seed",
    "kitchens",
    "duration_s",
    "orders_submitted",
    "orders_accepted",
    "orders_rejected",
    "orders_ready",
    "orders_late",
    "tasks_done",
    "duplicate_starts",
    "lost_events",
    "sla_alerts",
    "safety_alerts",
    "waste_units",
    "errors",
    "broker",
    "control_plane",
)


@dataclass
class RunFacts:
    """What a run gathered, from the client side, the API and the independent observer."""

    scenario: str
    seed: int
    kitchens: int
    duration_s: float
    broker: str
    control_plane: str
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] | None = None
    device_alarms: int = 0
    #: Device events seen on the bus, by event name (faults, alarms, doors, staff).
    device_events: dict[str, int] = field(default_factory=dict)
    invariants: dict[str, Any] = field(default_factory=dict)
    faults_applied: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    time_factor: float = 1.0
    #: Wall-clock end of the run: open orders whose due time had not come yet are not late.
    ended_at: datetime | None = None


def is_late(order: dict[str, Any], *, at: datetime | None = None) -> bool:
    """Ready after its promised time minus transport, or still not ready when that time had
    passed at ``at`` (the end of the run; an open order still in time is not late).

    >>> is_late({"status": "ready", "ready_at": "2026-01-01T12:10:00+00:00",
    ...          "promised_by": "2026-01-01T12:20:00+00:00", "transport_min": 5})
    False
    """
    if order.get("status") in ("rejected", "cancelled"):
        return False
    promised = datetime.fromisoformat(order["promised_by"])
    due = promised - timedelta(minutes=float(order.get("transport_min") or 0))
    ready_at = order.get("ready_at")
    if ready_at is not None:
        return datetime.fromisoformat(ready_at) > due
    if order.get("status") in ("ready", "handed_over"):
        return False
    return at is None or at > due


def build_report(facts: RunFacts, scenario: Scenario) -> dict[str, Any]:
    """The JSON report of a run, with the verdict of the scenario's expectations."""
    ready = [o for o in facts.orders if o.get("status") in ("ready", "handed_over")]
    alerts = facts.alerts or []
    sla = [a for a in alerts if "sla" in str(a.get("kind", "")).lower()]
    # Food safety is what the kitchens' agents raise; the control plane's own alerts that are
    # not about SLAs (``low_stock``, ...) are operational and counted apart.
    safety = [a for a in alerts if a not in sla and a.get("agent_id") != CONTROL_PLANE_ACTOR]
    operational = [a for a in alerts if a not in sla and a not in safety]
    notes = list(facts.notes)
    if facts.alerts is None:
        notes.append("alerts: GET /v1/alerts unavailable; sla_alerts and safety_alerts are 0")
    elif not sla:
        notes.append(
            "sla_alerts: the control plane exposes no SLA alerts yet (GET /v1/alerts lists "
            "agent alerts only); counted 0"
        )
    report: dict[str, Any] = {
        "scenario": facts.scenario,
        "seed": facts.seed,
        "kitchens": facts.kitchens,
        "duration_s": round(facts.duration_s, 1),
        "time_factor": round(facts.time_factor, 1),
        "orders_submitted": facts.submitted,
        "orders_accepted": facts.accepted,
        "orders_rejected": facts.rejected,
        "orders_ready": len(ready),
        "orders_late": sum(1 for o in facts.orders if is_late(o, at=facts.ended_at)),
        "orders_open": sum(
            1 for o in facts.orders if o.get("status") in ("accepted", "planned", "in_prep")
        ),
        "tasks_done": sum(1 for t in facts.tasks if t.get("state") == "done"),
        "tasks_by_state": _count(t.get("state") for t in facts.tasks),
        "duplicate_starts": int(facts.invariants.get("duplicate_starts", 0)),
        "lost_events": int(facts.invariants.get("lost_events", 0)),
        "sla_alerts": len(sla),
        "safety_alerts": len(safety),
        "operational_alerts": len(operational),
        "device_alarms": facts.device_alarms,
        "device_events": dict(facts.device_events),
        "alerts_by_kind": _count(a.get("kind") for a in alerts),
        "waste_units": sum(int(t.get("wasted_quantity") or 0) for t in facts.tasks),
        "errors": len(facts.errors),
        "error_samples": facts.errors[:10],
        "rejection_reasons": dict(facts.rejection_reasons),
        "faults_applied": facts.faults_applied,
        "invariants": facts.invariants,
        "broker": facts.broker,
        "control_plane": facts.control_plane,
        "notes": notes,
    }
    report["verdict"] = verdict(report, scenario)
    return report


def verdict(report: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """``{"passed": bool, "failures": [...]}`` against the scenario's expectations."""
    failures = []
    expect = scenario.expect
    if expect.zero_duplicate_starts and report["duplicate_starts"]:
        failures.append(f"{report['duplicate_starts']} duplicate starts")
    if expect.zero_lost_events and report["lost_events"]:
        failures.append(f"{report['lost_events']} lost events")
    if expect.some_ready and report["orders_accepted"] and not report["orders_ready"]:
        failures.append("no accepted order became ready")
    if expect.safety_alert and not (report["safety_alerts"] or report["device_alarms"]):
        failures.append("no food-safety alert was raised")
    for event in expect.device_events:
        if not report["device_events"].get(event):
            failures.append(f"no {event} event on the kitchen bus")
    if report["errors"]:
        failures.append(f"{report['errors']} errors")
    return {"passed": not failures, "failures": failures}


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
