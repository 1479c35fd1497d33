"""Whole-day scenarios with faults, run short: the independent evidence shows no duplicate
start and no lost event, the report and charts are written, and nothing is left behind."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from simulators.processes import leftover_processes
from simulators.scenario_run import ScenarioSettings, run_scenario
from simulators.scenarios import REPORT_FIELDS, SCENARIOS

#: Thread names of the run's in-process parts (proxies, devices, probes, staff, feed).
RUN_THREADS = ("wan-", "device-", "serial-probe:", "staff-", "order-feed")


def run_short(tmp_path: Path, name: str, duration_s: float = 20.0) -> dict[str, Any]:
    report_path = tmp_path / f"{name}.json"
    with (tmp_path / "console.txt").open("w") as console_file:
        report = run_scenario(
            ScenarioSettings(
                name,
                seed=11,
                kitchens=2,
                duration_s=duration_s,
                report=report_path,
                workdir=tmp_path / "run",
            ),
            Console(file=console_file, width=120),
        )
    assert json.loads(report_path.read_text())["scenario"] == name
    return report


def assert_clean_run(tmp_path: Path, report: dict[str, Any]) -> None:
    assert set(REPORT_FIELDS) <= set(report)
    assert report["verdict"] == {"passed": True, "failures": []}, report["invariants"]
    assert report["duplicate_starts"] == 0
    assert report["lost_events"] == 0
    assert report["orders_ready"] > 0
    for chart in report["charts"]:
        assert Path(chart).stat().st_size > 1000
    assert leftover_processes(tmp_path / "run") == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith(RUN_THREADS)]


@pytest.mark.timeout(90)
def test_agent_crash_mid_service_starts_no_batch_twice(tmp_path: Path) -> None:
    """Kitchen 1's agent SIGKILLed twice and restarted: zero duplicate starts, zero lost."""
    report = run_short(tmp_path, "agent-crash")
    assert [f["action"] for f in report["faults_applied"]] == [
        "crash_agent",
        "start_agent",
        "restart_agent",
    ]
    assert_clean_run(tmp_path, report)


@pytest.mark.timeout(90)
def test_broker_crash_and_restart_lose_no_command_or_ack(tmp_path: Path) -> None:
    """Mosquitto SIGKILLed, started, later restarted: the run still drains cleanly."""
    report = run_short(tmp_path, "broker-restart")
    assert_clean_run(tmp_path, report)


@pytest.mark.timeout(90)
def test_partitioned_kitchen_keeps_cooking_and_drains_after(tmp_path: Path) -> None:
    """Kitchen 1's link blackholed then healed: every order readied, nothing lost."""
    report = run_short(tmp_path, "partition")
    assert_clean_run(tmp_path, report)
    assert report["orders_open"] == 0


@pytest.mark.chaos
@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_passes_its_verdict_in_a_minute(tmp_path: Path, name: str) -> None:
    """The long form (make chaos): each scenario for 60 s meets its expectations."""
    report = run_short(tmp_path, name, duration_s=60.0)
    assert report["verdict"]["passed"], report["verdict"]
    assert leftover_processes(tmp_path / "run") == []
