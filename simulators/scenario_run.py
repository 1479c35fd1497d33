"""Run one scenario of :data:`simulators.scenarios.SCENARIOS` end to end on this machine.

A control plane, one broker, N kitchens (each: an agent whose control-plane link goes through
its own :class:`~simulators.chaos.FaultProxy`, simulated ovens, a fryer and a fridge, a serial
probe on a pty, and staff confirming manual steps), an order feed playing the scenario's demand
curve compressed into the run, the scenario's faults at their times, and an independent bus
recorder. The load runs for the first 70 % of the run; then every fault is healed and open work
drains until the run's end. Everything is stopped by PID in ``close()``; ``leftover_processes``
checks that nothing under the run's working directory survived.

>>> report = run_scenario(ScenarioSettings("partition", duration_s=30))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from simulators import charts
from simulators.broker import Broker
from simulators.chaos import FaultProxy
from simulators.demand import compress, generate
from simulators.demo import LOAD_SHARE, figures_table
from simulators.demo_menu import demo_plant
from simulators.devices import SimulatedDevice
from simulators.invariants import (
    AckSeen,
    BusRecorder,
    CommandSeen,
    Confirmation,
    duplicate_starts,
    lost_events,
)
from simulators.order_feed import OrderFeed, all_pages
from simulators.processes import ManagedProcess, leftover_processes
from simulators.scenario_menu import (
    COLD_HOLDING_LIMIT_C,
    COOKING,
    HOLDING,
    MANUAL,
    ROSTER,
    SKUS,
    STATIONS,
)
from simulators.scenarios import (
    RunFacts,
    Scenario,
    TimedFault,
    build_report,
    scenario_named,
    window_for,
)
from simulators.serial_probe import PhysicsSource, SerialProbe
from simulators.services import ControlPlane, console_script, created, run_cli
from simulators.staff import KitchenStaff, started_tasks_of
from simulators.wallclock import skewed_argv

OPEN_STATUSES = ("accepted", "planned", "in_prep")
#: How long the control plane may take, after the run, to know what the evidence shows.
CATCH_UP_S = 15.0
#: Kitchen-day minutes after which a holding breach becomes critical, and an alarm a warning,
#: for the agent's rules (compressed like the rest of the kitchen day).
BREACH_DELAY_KITCHEN_MIN = 10.0
ALARM_DELAY_KITCHEN_MIN = 5.0
COOKING_MAX_APPROACH_S = 5.0
#: Faults of shared infrastructure rather than of one kitchen.
WHOLE_SITE_ACTIONS = frozenset(
    {
        "crash_broker",
        "start_broker",
        "restart_broker",
        "crash_control_plane",
        "start_control_plane",
    }
)


@dataclass
class Evidence:
    """The independent evidence, frozen at one moment (see :mod:`simulators.invariants`)."""

    commands: list[CommandSeen]
    acks: list[AckSeen]
    events: list[dict[str, Any]]
    confirmations: list[Confirmation]
    accepted_order_ids: list[str]


@dataclass
class ScenarioSettings:
    """What to run: ``kitchens``/``duration_s`` None take the scenario's defaults."""

    name: str
    seed: int = 7
    kitchens: int | None = None
    duration_s: float | None = None
    report: Path | None = None
    workdir: Path | None = None
    charts: bool = True


@dataclass
class ScenarioKitchen:
    """One kitchen of the run and everything it runs."""

    kitchen_id: str
    home: Path
    proxy: FaultProxy
    #: The kitchen's devices reach the broker through this one (device <-> broker faults).
    bus: FaultProxy
    agent: ManagedProcess
    devices: dict[str, SimulatedDevice]
    probe: SerialProbe
    probe_source: PhysicsSource
    staff: KitchenStaff
    staff_http: httpx.Client
    broken: set[str] = field(default_factory=set)
    doors_open: set[str] = field(default_factory=set)
    down: bool = False


class ScenarioRun:
    """Owns every process, thread and file of one run; :meth:`close` stops them all."""

    def __init__(self, settings: ScenarioSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.scenario: Scenario = scenario_named(settings.name)
        self.kitchen_count = max(settings.kitchens or 2, self.scenario.min_kitchens)
        self.duration_s = settings.duration_s or self.scenario.default_duration_s
        self.load_s = self.duration_s * LOAD_SHARE
        self.tc = window_for(self.scenario, self.load_s)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if settings.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"brigade-{settings.name}-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = settings.workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker: Broker | None = None
        self.cp: ControlPlane | None = None
        self.recorder: BusRecorder | None = None
        self.kitchens: list[ScenarioKitchen] = []
        self._bus_ports: dict[str, int] = {}
        self.feed: OrderFeed | None = None
        self.queue_samples: list[tuple[float, dict[str, int]]] = []
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.facts = RunFacts(
            scenario=self.scenario.name,
            seed=settings.seed,
            kitchens=self.kitchen_count,
            duration_s=self.duration_s,
            broker="",
            control_plane="",
            time_factor=self.tc.factor,
        )

    # -- start --------------------------------------------------------------------------------
    def start(self) -> None:
        self.broker = Broker(self.workdir / "broker").start()
        # The day is compressed (a simulated minute per real second) but recipes cook in real
        # seconds, so just-in-time starts for promises made in compressed minutes would land
        # after the run. These scenarios check fault invariants (no duplicate start, nothing
        # lost); planning quality is measured by `scenario rush --compare-baseline`.
        self.cp = ControlPlane(
            self.workdir / "control-plane", env={"BRIGADE_PLANNING_MODE": "asap"}
        ).start()
        self.facts.broker, self.facts.control_plane = self.broker.url, self.cp.url
        self.recorder = BusRecorder(self.broker.host, self.broker.port).start()
        with self.cp.client() as http:
            for sku in SKUS:
                created(http.post("/v1/skus", json=sku))
            for n in range(1, self.kitchen_count + 1):
                self.kitchens.append(self._start_kitchen(http, n))
        profile = self.scenario.demand.scaled(self.kitchen_count)
        plan = compress(
            generate(
                profile, seed=self.settings.seed, start_h=self.tc.start_h, end_h=self.tc.end_h
            ),
            self.tc,
        )
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.feed = OrderFeed(self.cp, plan, self.tc, self.facts, self.started_at)
        self.feed.start()

    def _start_kitchen(self, http: httpx.Client, n: int) -> ScenarioKitchen:
        assert self.broker is not None and self.cp is not None
        kitchen_id = f"k{n}"
        home = self.workdir / kitchen_id
        home.mkdir(parents=True, exist_ok=True)
        created(
            http.post(
                "/v1/kitchens",
                json={
                    "id": kitchen_id,
                    "name": f"Kitchen {n}",
                    "timezone": "UTC",
                    "stations": STATIONS,
                },
            )
        )
        for device_id, kind, station in COOKING + HOLDING:
            created(
                http.post(
                    f"/v1/kitchens/{kitchen_id}/equipment",
                    json={"id": device_id, "kind": kind, "station_id": station},
                )
            )
        bus = FaultProxy(
            "127.0.0.1", 0, self.broker.host, self.broker.port, name=f"bus-{kitchen_id}"
        ).start()
        self._bus_ports[kitchen_id] = bus.port
        devices = {
            device_id: self._device(kitchen_id, device_id, kind).start()
            for device_id, kind, _ in COOKING + HOLDING
        }
        source = PhysicsSource.of_kind("fridge", setpoint_c=3.0)
        probe = SerialProbe(
            "probe-1",
            source,
            link_path=home / "probe-1",
            interval_s=60.0,
            time_scale=self.tc.factor,
            seed=self.settings.seed + n,
        ).start()
        proxy = FaultProxy("127.0.0.1", 0, self.cp.host, self.cp.port, name=f"wan-{kitchen_id}")
        proxy.start()
        token = created(
            http.post("/v1/enrollment-tokens", json={"kitchen_id": kitchen_id, "ttl_s": 600})
        )["token"]
        config = home / "agent.json"
        run_cli(
            "brigade-agent",
            "enroll",
            "--url",
            f"http://127.0.0.1:{proxy.port}",
            "--token",
            token,
            "--name",
            f"{kitchen_id}-box",
            "--config",
            str(config),
        )
        self._tune_agent(config, home)
        argv = [
            console_script("brigade-agent"),
            "run",
            "--config",
            str(config),
            "--mqtt-host",
            self.broker.host,
            "--mqtt-port",
            str(self.broker.port),
            "--data-dir",
            str(home / "data"),
        ]
        skew = dict(self.scenario.wall_clock_skew_s).get(n)
        if skew:
            argv = skewed_argv(argv, skew)
        agent = ManagedProcess(f"agent:{kitchen_id}", argv, log_path=home / "agent.log").start()
        staff_http = self.cp.client(timeout=2.0)
        staff = KitchenStaff(
            kitchen_id=kitchen_id,
            recipes=MANUAL,
            roster=ROSTER,
            mqtt_host=self.broker.host,
            mqtt_port=self.broker.port,
            tasks=started_tasks_of(staff_http, kitchen_id),
            seed=self.settings.seed * 100 + n,
        ).start()
        return ScenarioKitchen(
            kitchen_id, home, proxy, bus, agent, devices, probe, source, staff, staff_http
        )

    def _device(self, kitchen_id: str, device_id: str, kind: str) -> SimulatedDevice:
        assert self.broker is not None
        cooking = any(device_id == d for d, _, _ in COOKING)
        return SimulatedDevice(
            kind,
            kitchen_id,
            device_id,
            mqtt_host="127.0.0.1",
            mqtt_port=self._bus_ports[kitchen_id],
            # Cooking runs on real seconds (the menu's recipes); holding on kitchen-day time.
            time_scale=1.0 if cooking else self.tc.factor,
            plant=demo_plant(kind) if cooking else None,
            # The demo plant heats in about two seconds: a dead element shows after five.
            max_approach_s=COOKING_MAX_APPROACH_S if cooking else None,
        )

    def _tune_agent(self, config: Path, home: Path) -> None:
        """Settings of a compressed day: quick syncs, compressed breach delays, the probe."""
        data = json.loads(config.read_text())
        breach_s = self.tc.real_seconds(BREACH_DELAY_KITCHEN_MIN)
        alarm_s = self.tc.real_seconds(ALARM_DELAY_KITCHEN_MIN)
        data.update(
            sync_interval_s=0.5,
            metrics_port=None,
            manual_margin_s=30.0,
            safety_tick_s=0.5,
            device_offline_alert_s=max(5.0, self.duration_s / 4),
            serial_ports=[{"path": str(home / "probe-1"), "configure": {"interval_s": "60"}}],
            safety_overrides={
                "fridge-1": {"breach_delay_s": breach_s, "alarm_delay_s": alarm_s},
                "probe-1": {"mode": "cold", "breach_delay_s": breach_s, "alarm_delay_s": alarm_s},
            },
        )
        config.write_text(json.dumps(data))
        os.chmod(config, 0o600)

    # -- faults -------------------------------------------------------------------------------
    def apply(self, fault: TimedFault) -> None:
        kitchen = self.kitchens[min(fault.kitchen, len(self.kitchens)) - 1]
        actions: dict[str, Callable[[], object]] = {
            "partition": lambda: kitchen.proxy.set_mode("blackhole"),
            "heal": lambda: kitchen.proxy.set_mode("pass"),
            "slow_link": lambda: kitchen.proxy.set_mode("delay", delay_ms=300),
            "bus_reset": lambda: kitchen.bus.set_mode("reset"),
            "bus_delay": lambda: kitchen.bus.set_mode("delay", delay_ms=200),
            "bus_half_open": lambda: kitchen.bus.set_mode("half-open", direction="downstream"),
            "bus_heal": lambda: kitchen.bus.set_mode("pass"),
            "crash_agent": kitchen.agent.kill,
            "start_agent": lambda: kitchen.agent.running() or kitchen.agent.start(),
            "restart_agent": lambda: (kitchen.agent.kill(), kitchen.agent.start()),
            "kitchen_down": lambda: self._kitchen_down(kitchen),
            "kitchen_up": lambda: self._kitchen_up(kitchen),
            "crash_broker": self._broker().kill,
            "start_broker": lambda: self._broker().process.running() or self._broker().start(),
            "restart_broker": lambda: self._broker().restart(crash=False),
            "crash_control_plane": self._cp().kill,
            "start_control_plane": lambda: self._cp().process.running() or self._cp().start(),
            "fail_element": lambda: self._element(kitchen, fault.target, failed=True),
            "repair_element": lambda: self._element(kitchen, fault.target, failed=False),
            "open_door": lambda: self._door(kitchen, fault.target, opened=True),
            "close_door": lambda: self._door(kitchen, fault.target, opened=False),
            "probe_stuck": lambda: kitchen.probe.set_faults(
                stuck_at_c=round(kitchen.probe_source.read(), 1)
            ),
            "probe_unplug": kitchen.probe.unplug,
            "probe_replug": kitchen.probe.replug,
        }
        actions[fault.action]()
        where = None if fault.action in WHOLE_SITE_ACTIONS else kitchen.kitchen_id
        self.facts.faults_applied.append(
            {
                "at_s": round(time.monotonic() - self.started_at, 1),
                "action": fault.action,
                "kitchen": where,
                "target": fault.target or None,
            }
        )
        self.console.print(
            f"  t={time.monotonic() - self.started_at:5.1f}s  {fault.action} "
            f"{where or ''} {fault.target}".rstrip(),
            highlight=False,
        )

    def _broker(self) -> Broker:
        assert self.broker is not None
        return self.broker

    def _cp(self) -> ControlPlane:
        assert self.cp is not None
        return self.cp

    def _element(self, kitchen: ScenarioKitchen, device_id: str, *, failed: bool) -> None:
        device = kitchen.devices[device_id]
        if failed:
            device.fail_element()
            kitchen.broken.add(device_id)
            if device_id == "fridge-1":
                # The probe sits in the same fridge: it warms with it.
                kitchen.probe_source.fail()
        else:
            device.repair_element()
            kitchen.broken.discard(device_id)
            if device_id == "fridge-1":
                kitchen.probe_source.repair(3.0)

    def _door(self, kitchen: ScenarioKitchen, device_id: str, *, opened: bool) -> None:
        device = kitchen.devices[device_id]
        if opened:
            device.open_door()
            kitchen.doors_open.add(device_id)
        else:
            device.close_door()
            kitchen.doors_open.discard(device_id)
        if device_id == "fridge-1":
            kitchen.probe_source.set_door(opened)

    def _kitchen_down(self, kitchen: ScenarioKitchen) -> None:
        kitchen.down = True
        kitchen.agent.kill()
        for device in kitchen.devices.values():
            device.stop()
        kitchen.probe.unplug()

    def _kitchen_up(self, kitchen: ScenarioKitchen) -> None:
        kitchen.down = False
        kitchen.probe.replug()
        for device_id, kind, _ in COOKING + HOLDING:
            fresh = self._device(kitchen.kitchen_id, device_id, kind)
            if device_id in kitchen.broken:
                fresh.fail_element()
            kitchen.devices[device_id] = fresh.start()
        if not kitchen.agent.running():
            kitchen.agent.start()

    def heal_all(self) -> None:
        """Before the drain: every link passes, every process runs again."""
        if self.broker is not None and not self.broker.process.running():
            self.broker.start()
        if self.cp is not None and not self.cp.process.running():
            self.cp.start()
        for kitchen in self.kitchens:
            kitchen.proxy.set_mode("pass")
            kitchen.bus.set_mode("pass")
            if kitchen.down:
                self._kitchen_up(kitchen)
            if not kitchen.agent.running():
                kitchen.agent.start()

    # -- observation --------------------------------------------------------------------------
    def sample(self) -> dict[str, Any] | None:
        assert self.cp is not None
        try:
            with self.cp.client(timeout=2.0) as http:
                stats: dict[str, Any] = http.get("/v1/stats").raise_for_status().json()
        except httpx.HTTPError:
            return None
        kitchens: dict[str, dict[str, int]] = stats.get("kitchens", {})
        row = {k: sum(v.get(s, 0) for s in OPEN_STATUSES) for k, v in kitchens.items()}
        by_status: dict[str, int] = stats.get("orders_by_status", {})
        row["all"] = sum(by_status.get(s, 0) for s in OPEN_STATUSES)
        self.queue_samples.append((time.monotonic() - self.started_at, row))
        return stats

    def evidence(self) -> Evidence:
        """What the kitchens evidently did, as seen from outside, frozen now."""
        assert self.recorder is not None and self.feed is not None
        commands, acks, events = self.recorder.snapshot()
        with self.feed.lock:
            accepted = list(self.feed.accepted_ids)
        return Evidence(
            commands=commands,
            acks=acks,
            events=events,
            confirmations=[
                Confirmation(task, step)
                for kitchen in self.kitchens
                for task, step, _badge in list(kitchen.staff.confirmed)
            ],
            accepted_order_ids=accepted,
        )

    def collect(self, evidence: Evidence) -> None:
        """Orders, tasks and alerts from the API; the invariants against ``evidence``."""
        assert self.cp is not None and self.feed is not None
        facts = self.facts
        with self.cp.client(timeout=10.0) as http:
            facts.orders = all_pages(http, "/v1/orders", "orders")
            facts.tasks = all_pages(http, "/v1/tasks", "tasks")
            try:
                facts.alerts = all_pages(http, "/v1/alerts", "alerts")
            except httpx.HTTPError:
                facts.alerts = None
        facts.rejection_reasons = dict(self.feed.reasons)
        facts.device_alarms = sum(
            1 for e in evidence.events if e.get("event") in ("temperature_alarm", "element_fault")
        )
        facts.device_events = dict(Counter(str(e.get("event")) for e in evidence.events))
        steps = {sku["id"]: len(sku["steps"]) - 1 for sku in SKUS}
        final_steps = {t["id"]: steps[t["sku_id"]] for t in facts.tasks if t["sku_id"] in steps}
        duplicates = duplicate_starts(evidence.commands, evidence.acks)
        lost = lost_events(
            commands=evidence.commands,
            acks=evidence.acks,
            confirmations=evidence.confirmations,
            final_steps=final_steps,
            api_tasks={t["id"]: t for t in facts.tasks},
            accepted_order_ids=evidence.accepted_order_ids,
            api_order_ids=[o["id"] for o in facts.orders],
        )
        facts.invariants = {
            "duplicate_starts": sum(len(d["batches"]) - 1 for d in duplicates),
            "duplicate_start_details": duplicates[:20],
            "lost_events": len(lost),
            "lost_event_details": lost[:20],
            "evidence": {
                "commands_seen": len(evidence.commands),
                "acks_seen": len(evidence.acks),
                "staff_confirmations": len(evidence.confirmations),
                "orders_answered_201": len(evidence.accepted_order_ids),
            },
        }

    def check_agents(self) -> None:
        for kitchen in self.kitchens:
            code = kitchen.agent.returncode()
            if code not in (None, 0, -9, -15):
                self.facts.errors.append(
                    f"{kitchen.agent.name} exited {code}: {kitchen.agent.log_tail(5)}"
                )

    def write_charts(self, report_path: Path) -> list[str]:
        assert self.recorder is not None
        stem = report_path.with_suffix("")
        title = self.scenario.name
        written = [
            charts.queue_depth_chart(self.queue_samples, Path(f"{stem}-queue.png"), title),
            charts.on_time_chart(
                self.facts.orders, self.started_wall, Path(f"{stem}-on-time.png"), title
            ),
            charts.temperature_chart(
                list(self.recorder.temperatures),
                self.started_wall,
                {device_id: COLD_HOLDING_LIMIT_C for device_id, _, _ in HOLDING},
                Path(f"{stem}-temperatures.png"),
                title,
            ),
        ]
        return [str(p) for p in written]

    # -- stop ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything, newest first; never raises."""
        if self.feed is not None:
            self.feed.halt.set()
            self.feed.join(10)
        for kitchen in self.kitchens:
            with contextlib.suppress(Exception):
                kitchen.staff.stop()
            kitchen.staff_http.close()
            kitchen.agent.stop()
            for device in kitchen.devices.values():
                with contextlib.suppress(Exception):
                    device.stop()
            kitchen.probe.stop()
            kitchen.proxy.stop()
            kitchen.bus.stop()
        if self.recorder is not None:
            self.recorder.stop()
        if self.cp is not None:
            self.cp.stop()
        if self.broker is not None:
            self.broker.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def settled(stats: dict[str, Any]) -> bool:
    """No open order and no task leased or cooking: the run has drained."""
    tasks: dict[str, int] = stats.get("tasks_by_state", {})
    orders: dict[str, int] = stats.get("orders_by_status", {})
    return not any(tasks.get(s, 0) for s in ("leased", "started")) and not any(
        orders.get(s, 0) for s in OPEN_STATUSES
    )


SCENARIO_FIGURES = (
    "kitchens",
    "duration_s",
    "orders_submitted",
    "orders_accepted",
    "orders_rejected",
    "orders_ready",
    "orders_late",
    "orders_open",
    "tasks_done",
    "duplicate_starts",
    "lost_events",
    "sla_alerts",
    "safety_alerts",
    "operational_alerts",
    "device_alarms",
    "waste_units",
    "errors",
)


def summary_table(report: dict[str, Any]) -> Table:
    verdict = "PASSED" if report["verdict"]["passed"] else "FAILED"
    title = f"Scenario {report['scenario']} (seed {report['seed']}): {verdict}"
    return figures_table(title, report, SCENARIO_FIGURES)


def run_scenario(settings: ScenarioSettings, console: Console | None = None) -> dict[str, Any]:
    """Run the scenario to its end and return the report (also written if ``report`` is set)."""
    console = console or Console()
    run = ScenarioRun(settings, console)
    scenario = run.scenario
    console.print(
        f"[bold]Scenario {scenario.name}[/bold]: {scenario.summary}\n"
        f"  {run.kitchen_count} kitchens, {run.duration_s:g} s "
        f"(kitchen day {run.tc.start_h:.2f}h-{run.tc.end_h:.2f}h at {run.tc.factor:g}x), "
        f"seed {settings.seed}, workdir {run.workdir}",
        highlight=False,
    )
    pending = sorted(scenario.faults, key=lambda f: f.at)
    try:
        run.start()
        end_at = run.started_at + run.duration_s
        load_until = run.started_at + run.load_s
        healed = False
        while True:
            now = time.monotonic()
            while pending and now >= run.started_at + pending[0].at * run.load_s:
                run.apply(pending.pop(0))
            stats = run.sample()
            if now >= load_until:
                if not healed:
                    assert run.feed is not None
                    run.feed.halt.set()
                    run.feed.join(20)
                    run.heal_all()
                    healed = True
                drained = stats is not None and settled(stats) and not scenario.run_to_end
                if drained or now >= end_at:
                    break
            time.sleep(0.5)
        run.facts.duration_s = time.monotonic() - run.started_at
        run.facts.ended_at = datetime.now(UTC)
        run.check_agents()
        # The evidence is frozen now; the control plane gets a bounded time to catch up with
        # it (agents sync every 0.5 s, a healed partition drains its outbox). The API's task
        # states only move forward, so once it agrees with the evidence it stays agreed.
        evidence = run.evidence()
        catch_up_until = time.monotonic() + CATCH_UP_S
        while True:
            run.collect(evidence)
            if not run.facts.invariants["lost_events"] or time.monotonic() >= catch_up_until:
                break
            time.sleep(0.5)
        run.facts.invariants["catch_up_s"] = round(
            max(0.0, time.monotonic() - run.started_at - run.facts.duration_s), 1
        )
        report = build_report(run.facts, scenario)
        if settings.report is not None:
            if settings.charts:
                report["charts"] = run.write_charts(settings.report)
            settings.report.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        run.close()
    report["leftover_processes"] = leftover_processes(run.workdir)
    console.print(summary_table(report))
    for failure in report["verdict"]["failures"]:
        console.print(f"[red]verdict:[/red] {failure}")
    if settings.report is not None:
        settings.report.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {settings.report}")
    return report
