"""The simulated probe against the agent's own serial link: the two sides of the serial
protocol agree through a real pty, faults included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_agent.backoff import Backoff
from edge_agent.links.serial import SerialLink
from edge_agent.readings import Observed, ProbeCheck
from simulators.processes import wait_until
from simulators.serial_probe import ProbeFaults, ScriptedSource, SerialProbe
from tests.fixtures_agent import ListSink


@contextmanager
def agent_link(path: Path, sink: ListSink, **configure: str) -> Iterator[SerialLink]:
    link = SerialLink(
        path=str(path),
        sink=sink,
        configure=configure,
        read_timeout_s=0.05,
        backoff=Backoff(base_s=0.05, cap_s=0.2),
    )
    stop = threading.Event()
    thread = threading.Thread(target=link.run, args=(stop,), name="brigade-serial-sim-test")
    thread.start()
    try:
        yield link
    finally:
        stop.set()
        thread.join(timeout=10)


def readings(sink: ListSink) -> list[float]:
    return [item.readings[0].value for item in sink.of(Observed) if item.readings]


def test_agent_link_reads_the_probe_and_configures_it(tmp_path: Path, sink: ListSink) -> None:
    """The agent's CFG interval is acked ok by the probe, and its readings arrive in °C."""
    path = tmp_path / "probe-1"
    with (
        SerialProbe("probe-1", ScriptedSource([(0, 4.2)]), link_path=path, interval_s=0.05),
        agent_link(path, sink, interval_s="0.1") as link,
    ):
        wait_until(lambda: link.config_state() == {"interval_s": "ok"}, timeout=10, what="ack")
        wait_until(lambda: len(readings(sink)) >= 3, timeout=10, what="readings")
    assert set(readings(sink)) == {4.2}


def test_agent_link_drops_exactly_the_corrupted_frames(tmp_path: Path, sink: ListSink) -> None:
    """Bad checksums and garbage are dropped and counted by reason; nothing crashes."""
    path = tmp_path / "probe-1"
    faults = ProbeFaults(bad_checksum_rate=0.3, garbage_rate=0.3)
    with (
        SerialProbe(
            "probe-1", ScriptedSource([(0, 3.0)]), link_path=path, interval_s=0.03, faults=faults
        ) as probe,
        agent_link(path, sink) as link,
    ):
        wait_until(lambda: link.frames_ok >= 20, timeout=10, what="20 good frames")
        wait_until(
            lambda: (
                link.drops.counts().get("bad_checksum", 0) > 0
                and link.drops.counts().get("non_ascii", 0) > 0
            ),
            timeout=10,
            what="drops of both kinds",
        )
        assert probe.injected["bad_checksum"] > 0
    assert set(readings(sink)) == {3.0}


def test_agent_link_survives_unplug_and_replug(tmp_path: Path, sink: ListSink) -> None:
    """Unplugged, the link goes down; replugged at the same path, it reconnects and reads."""
    path = tmp_path / "probe-1"
    with (
        SerialProbe(
            "probe-1", ScriptedSource([(0, 2.0)]), link_path=path, interval_s=0.05
        ) as probe,
        agent_link(path, sink) as link,
    ):
        wait_until(lambda: link.frames_ok >= 2, timeout=10, what="first frames")
        probe.unplug()
        wait_until(lambda: link.state != "up", timeout=10, what="link down")
        before = link.frames_ok
        probe.replug()
        wait_until(lambda: link.frames_ok > before + 2, timeout=15, what="frames after replug")
    assert link.connects >= 2


def test_the_probes_check_button_reaches_the_agent_as_a_probe_check(
    tmp_path: Path, sink: ListSink
) -> None:
    """The simulated probe, configured for the boiling point, pressed while reading 98.6 °C:
    the agent's link hands the monitor a check 1.4 °C off its reference."""
    path = tmp_path / "probe-1"
    with (
        SerialProbe(
            "probe-1", ScriptedSource([(0, 98.6)]), link_path=path, interval_s=0.05
        ) as probe,
        agent_link(path, sink, check_ref="100") as link,
    ):
        wait_until(lambda: link.config_state() == {"check_ref": "ok"}, timeout=10, what="ack")
        probe.check()
        sink.wait_for(ProbeCheck, 1)
    [check] = sink.of(ProbeCheck)
    assert (check.reading_c, check.reference_c) == (98.6, 100.0)
