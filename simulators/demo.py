"""``brigade-sim demo``: a control plane, a broker, N kitchens with agents and simulated
equipment, and an order load, with live progress and a summary at the end.

Everything runs on loopback ports picked at start, under one working directory, and is stopped
by PID when the demo ends (normally, on Ctrl-C or on SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.broker import Broker
from simulators.demo_menu import EQUIPMENT, SKUS, STATIONS, demo_plant
from simulators.devices import SimulatedDevice
from simulators.processes import ManagedProcess, free_port
from simulators.services import ControlPlane, console_script, created, json_object, run_cli

#: Share of the run spent submitting orders; the rest lets open orders finish.
LOAD_SHARE = 0.7


@dataclass
class DemoSettings:
    """What the demo runs: ``duration_s`` None means until Ctrl-C."""

    kitchens: int = 3
    duration_s: float | None = None
    orders_per_s: float = 1.5
    seed: int = 7
    workdir: Path | None = None
    report: Path | None = None
    # Promises are "transport + the recipe + this much slack": the control plane plans just in
    # time, so a promise ten minutes out would not start cooking within a short demo.
    promise_slack_s: float = 8.0


@dataclass
class LoadCounters:
    """What the order load saw, from the client side."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    rejection_reasons: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(what)


class OrderLoad(threading.Thread):
    """Posts orders at a seeded Poisson rate until stopped, each with its own Idempotency-Key."""

    def __init__(self, cp: ControlPlane, settings: DemoSettings, counters: LoadCounters) -> None:
        super().__init__(name="order-load", daemon=True)
        self._cp = cp
        self._settings = settings
        self._counters = counters
        self._rng = random.Random(settings.seed)
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        with self._cp.client() as http:
            while not self._halt.wait(self._rng.expovariate(self._settings.orders_per_s)):
                self._submit(http)

    def _submit(self, http: httpx.Client) -> None:
        sku = self._rng.choice(SKUS)
        transport_min = self._rng.randint(2, 8)
        cook_s = sum(step["duration_s"] for step in sku["steps"])
        promised = datetime.now(UTC) + timedelta(
            minutes=transport_min, seconds=cook_s + self._settings.promise_slack_s
        )
        body = {
            "items": [{"sku_id": sku["id"], "quantity": self._rng.randint(1, 4)}],
            "promised_by": promised.isoformat(),
            "destination": f"store-{self._rng.randint(1, 5)}",
            "transport_min": transport_min,
            "priority": sku["priority"],
        }
        key = str(uuid.UUID(int=self._rng.getrandbits(128)))
        self._counters.submitted += 1
        for attempt in range(3):
            try:
                response = http.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError as exc:
                # Safe to retry: the same key replays the stored answer.
                if attempt == 2:
                    self._counters.error(f"transport: {exc!r}")
                continue
            if response.status_code == 201:
                self._counters.accepted += 1
            elif response.status_code in (422, 429, 503) and "reason" in json_object(response):
                self._counters.rejected += 1
                self._counters.rejection_reasons[json_object(response)["reason"]] += 1
            else:
                self._counters.error(f"HTTP {response.status_code}: {response.text[:200]}")
            return


@dataclass
class Kitchen:
    """One demo kitchen: its agent process and its simulated equipment."""

    kitchen_id: str
    agent: ManagedProcess
    devices: list[SimulatedDevice]


class Demo:
    """Owns every process and thread of a demo run; ``close()`` stops them all."""

    def __init__(self, settings: DemoSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if settings.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="brigade-demo-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = settings.workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker: Broker | None = None
        self.cp: ControlPlane | None = None
        self.kitchens: list[Kitchen] = []
        self.counters = LoadCounters()
        self.load: OrderLoad | None = None
        self.crashed: list[str] = []

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        self.console.print(f"[bold]Brigade demo[/bold] in {self.workdir}")
        self.broker = Broker(self.workdir / "broker").start()
        self.console.print(f"  broker         {self.broker.url}")
        self.cp = ControlPlane(self.workdir / "control-plane").start()
        self.console.print(
            f"  control plane  {self.cp.url}  (OpenAPI at {self.cp.url}/docs)", soft_wrap=True
        )
        with self.cp.client() as http:
            for sku in SKUS:
                created(http.post("/v1/skus", json=sku))
            for n in range(1, self.settings.kitchens + 1):
                self.kitchens.append(self._start_kitchen(http, f"k{n}"))
        self.load = OrderLoad(self.cp, self.settings, self.counters)
        self.load.start()

    def _start_kitchen(self, http: httpx.Client, kitchen_id: str) -> Kitchen:
        assert self.broker is not None and self.cp is not None
        created(
            http.post(
                "/v1/kitchens",
                json={
                    "id": kitchen_id,
                    "name": f"Demo kitchen {kitchen_id}",
                    "timezone": "UTC",
                    "stations": STATIONS,
                },
            )
        )
        for device_id, kind, station in EQUIPMENT:
            created(
                http.post(
                    f"/v1/kitchens/{kitchen_id}/equipment",
                    json={"id": device_id, "kind": kind, "station_id": station},
                )
            )
        devices = [
            SimulatedDevice(
                kind=kind,
                kitchen_id=kitchen_id,
                device_id=device_id,
                mqtt_host=self.broker.host,
                mqtt_port=self.broker.port,
                time_scale=1.0,
                plant=demo_plant(kind),
            )
            for device_id, kind, _station in EQUIPMENT
        ]
        for device in devices:
            device.start()
        token = created(
            http.post("/v1/enrollment-tokens", json={"kitchen_id": kitchen_id, "ttl_s": 600})
        )["token"]
        home = self.workdir / kitchen_id
        config = home / "agent.json"
        run_cli(
            "brigade-agent",
            "enroll",
            "--url",
            self.cp.url,
            "--token",
            token,
            "--name",
            f"{kitchen_id}-box",
            "--config",
            str(config),
        )
        metrics_port = self._tune_agent(config)
        agent = ManagedProcess(
            f"agent:{kitchen_id}",
            [
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
            ],
            log_path=home / "agent.log",
        ).start()
        self.console.print(
            f"  kitchen {kitchen_id}     agent pid {agent.pid}, {len(devices)} devices, "
            f"agent metrics http://127.0.0.1:{metrics_port}/metrics",
            soft_wrap=True,
        )
        return Kitchen(kitchen_id, agent, devices)

    @staticmethod
    def _tune_agent(config: Path) -> int:
        """Quick syncs for a lively demo, and each agent's /metrics on a port of its own."""
        data = json.loads(config.read_text())
        data.update(sync_interval_s=0.5, metrics_port=free_port())
        config.write_text(json.dumps(data))
        os.chmod(config, 0o600)
        return int(data["metrics_port"])

    # -- run -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        assert self.cp is not None
        with self.cp.client(timeout=5.0) as http:
            response = http.get("/v1/stats")
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    def check_processes(self) -> None:
        for kitchen in self.kitchens:
            if not kitchen.agent.running() and kitchen.agent.name not in self.crashed:
                self.crashed.append(kitchen.agent.name)
                self.counters.error(f"{kitchen.agent.name} exited {kitchen.agent.returncode()}")

    def open_orders(self, stats: dict[str, Any]) -> int:
        by_status: dict[str, int] = stats.get("orders_by_status", {})
        return sum(by_status.get(s, 0) for s in ("accepted", "planned", "in_prep"))

    def stop_load(self) -> None:
        if self.load is not None:
            self.load.stop()
            self.load.join(timeout=15)

    def close(self) -> None:
        """Stop everything, newest first. Every step runs even if an earlier one fails, so a
        crash of the demo itself never leaves a broker, server or agent behind."""
        steps: list[Callable[[], object]] = [self.stop_load]
        for kitchen in self.kitchens:
            steps.append(kitchen.agent.stop)
            steps += [device.stop for device in kitchen.devices]
        if self.cp is not None:
            steps.append(self.cp.stop)
        if self.broker is not None:
            steps.append(self.broker.stop)
        if self._tmp is not None:
            steps.append(self._tmp.cleanup)
        for step in steps:
            try:
                step()
            except Exception as exc:  # the next process must still be stopped
                self.console.print(f"[red]shutdown:[/red] {step!r} failed: {exc!r}")

    # -- report ----------------------------------------------------------------------------
    def report(self, stats: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
        by_status: dict[str, int] = stats.get("orders_by_status", {})
        tasks: dict[str, int] = stats.get("tasks_by_state", {})
        return {
            "duration_s": round(elapsed_s, 1),
            "kitchens": self.settings.kitchens,
            "seed": self.settings.seed,
            "orders_submitted": self.counters.submitted,
            "orders_accepted": self.counters.accepted,
            "orders_rejected": self.counters.rejected,
            "orders_ready": by_status.get("ready", 0) + by_status.get("handed_over", 0),
            "orders_open": self.open_orders(stats),
            "orders_failed": by_status.get("failed", 0),
            "tasks_done": tasks.get("done", 0),
            "tasks_by_state": tasks,
            "rejection_reasons": dict(self.counters.rejection_reasons),
            "errors": self.counters.errors,
            "error_samples": self.counters.error_samples,
            "per_kitchen": stats.get("kitchens", {}),
            "broker": self.broker.url if self.broker else None,
            "control_plane": self.cp.url if self.cp else None,
        }


def progress_table(stats: dict[str, Any], counters: LoadCounters, elapsed_s: float) -> Table:
    """The live view: orders per kitchen by status, and the load's own counters."""
    table = Table(
        title=(
            f"Brigade demo  t={elapsed_s:5.1f}s  submitted={counters.submitted} "
            f"accepted={counters.accepted} rejected={counters.rejected} errors={counters.errors}"
        )
    )
    columns = ("accepted", "planned", "in_prep", "ready", "failed")
    table.add_column("kitchen")
    for column in columns:
        table.add_column(column, justify="right")
    kitchens: dict[str, dict[str, int]] = stats.get("kitchens", {})
    for kitchen_id in sorted(kitchens):
        row = kitchens[kitchen_id]
        table.add_row(kitchen_id, *(str(row.get(c, 0)) for c in columns))
    totals = stats.get("orders_by_status", {})
    table.add_row("[bold]all[/bold]", *(str(totals.get(c, 0)) for c in columns))
    return table


@contextlib.contextmanager
def _progress_view(
    console: Console,
) -> Iterator[Callable[[dict[str, Any], LoadCounters, float], None]]:
    """A live table on a terminal; a progress line every few seconds in a log."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=2) as live:
            yield lambda stats, counters, t: live.update(progress_table(stats, counters, t))
        return
    last = [-10.0]

    def line(stats: dict[str, Any], counters: LoadCounters, elapsed_s: float) -> None:
        if elapsed_s - last[0] < 5:
            return
        last[0] = elapsed_s
        kitchens: dict[str, dict[str, int]] = stats.get("kitchens", {})
        per = "  ".join(
            f"{k}: {v.get('in_prep', 0)} in prep/{v.get('ready', 0)} ready"
            for k, v in sorted(kitchens.items())
        )
        console.print(
            f"t={elapsed_s:5.1f}s submitted={counters.submitted} accepted={counters.accepted} "
            f"rejected={counters.rejected} errors={counters.errors} | {per}",
            highlight=False,
            soft_wrap=True,
        )

    yield line


DEMO_FIGURES = (
    "duration_s",
    "kitchens",
    "orders_submitted",
    "orders_accepted",
    "orders_rejected",
    "orders_ready",
    "orders_open",
    "orders_failed",
    "tasks_done",
    "errors",
)


def figures_table(title: str, report: dict[str, Any], keys: Sequence[str]) -> Table:
    """A two-column table of the report's figures ``keys``, in that order."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in keys:
        table.add_row(key, str(report[key]))
    return table


def summary_table(report: dict[str, Any]) -> Table:
    return figures_table("Demo summary", report, DEMO_FIGURES)


def run_demo(settings: DemoSettings, console: Console | None = None) -> dict[str, Any]:
    """Run the demo to its end (duration or Ctrl-C/SIGTERM) and return the report."""
    console = console or Console()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    demo = Demo(settings, console)
    started = time.monotonic()
    stats: dict[str, Any] = {}
    try:
        demo.start()
        load_until = (
            None if settings.duration_s is None else started + settings.duration_s * LOAD_SHARE
        )
        end_at = None if settings.duration_s is None else started + settings.duration_s
        with _progress_view(console) as show:
            while not stopping.is_set():
                now = time.monotonic()
                try:
                    stats = demo.stats()
                except httpx.HTTPError as exc:
                    demo.counters.error(f"stats: {exc!r}")
                demo.check_processes()
                show(stats, demo.counters, now - started)
                if load_until is not None and now >= load_until:
                    demo.stop_load()
                    # Drain: stop early once every accepted order has finished.
                    if demo.open_orders(stats) == 0 or (end_at is not None and now >= end_at):
                        break
                stopping.wait(0.5)
        demo.stop_load()
        with contextlib.suppress(httpx.HTTPError):
            stats = demo.stats()
        report = demo.report(stats, time.monotonic() - started)
    finally:
        demo.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(summary_table(report))
    if report["rejection_reasons"]:
        console.print(f"rejections by reason: {report['rejection_reasons']}")
    for sample in report["error_samples"]:
        console.print(f"[red]error:[/red] {sample}")
    if settings.report:
        settings.report.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {settings.report}")
    return report
