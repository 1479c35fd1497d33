"""A reference probe on a real pty cross-checks a fridge's own sensor: the serial link, the
ingest loop, the monitor and the SQLite store, all real (SPEC 7: probe accuracy ±1 °C)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.backoff import Backoff
from edge_agent.clock import SystemClock
from edge_agent.ingest import Ingest
from edge_agent.links.serial import SerialLink
from edge_agent.monitor import SafetyMonitor
from edge_agent.readings import Observed, ReadingIn
from edge_agent.safety import RULE_PACKS
from edge_agent.store import Store
from protocol.events import EventType, HaccpEvidence
from simulators.processes import wait_until
from simulators.serial_probe import ScriptedSource, SerialProbe


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    """An ingest loop (its own thread) whose monitor knows probe-1 is placed in fridge-1."""
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        monitor = SafetyMonitor(
            pack=RULE_PACKS["us_fda_food_code_2022"],
            kind_of={"fridge-1": "fridge", "probe-1": "probe"}.get,
            placements={"probe-1": "fridge-1/air_temp"},
        )
        loop = Ingest(store=store, monitor=monitor, clock=SystemClock(), flush_s=0.05)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), name="brigade-ingest-test")
        thread.start()
        try:
            yield loop
        finally:
            stop.set()
            thread.join(timeout=10)


def test_a_reference_probe_off_by_more_than_one_degree_is_a_recorded_compliance_event(
    tmp_path: Path, ingest: Ingest
) -> None:
    """The fridge says 3.0 °C, the probe in it reads 5.5 °C over the pty: a
    probe_disagreement alert, and both readings numbered into the outbox as evidence."""
    path = tmp_path / "probe-1"
    link = SerialLink(
        path=str(path),
        sink=ingest,
        configure={},
        read_timeout_s=0.05,
        backoff=Backoff(base_s=0.05, cap_s=0.2),
    )
    stop = threading.Event()
    reader = threading.Thread(target=link.run, args=(stop,), name="brigade-serial-test")
    with SerialProbe("probe-1", ScriptedSource([(0, 5.5)]), link_path=path, interval_s=0.05):
        reader.start()
        try:

            def disagreement() -> bool:
                now = time.time()
                fridge = ReadingIn("fridge-1", "air_temp", "C", 3.0, at=now)
                ingest.submit(Observed("fridge-1", "mqtt", None, now, (fridge,)))
                return any(a["kind"] == "probe_disagreement" for a in ingest.store.alerts())

            wait_until(disagreement, timeout=15, interval=0.1, what="probe_disagreement alert")
        finally:
            stop.set()
            reader.join(timeout=10)
    [alert] = [a for a in ingest.store.alerts() if a["kind"] == "probe_disagreement"]
    assert alert["value"] == pytest.approx(2.5) and alert["limit_value"] == 1.0
    evidence = [
        reading
        for event in ingest.store.pending_events(limit=1000)
        if event.type == EventType.HACCP_EVIDENCE
        for reading in HaccpEvidence.model_validate(event.payload).readings
        if reading.alert_id == alert["alert_id"]
    ]
    assert sorted((r.device_id, r.probe, r.value_c) for r in evidence) == [
        ("fridge-1", "air_temp", 3.0),
        ("probe-1", "temp", 5.5),
    ]
