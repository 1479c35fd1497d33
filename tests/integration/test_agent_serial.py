"""The serial probe link on a real pty: frames, drops by reason, unplug/replug, configuration."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from edge_agent.backoff import Backoff
from edge_agent.links.serial import SerialLink
from edge_agent.readings import Observed, ProbeCheck, StatusSeen
from protocol import Frame, FrameType, encode_frame
from protocol.vector_files import load
from simulators.processes import wait_until
from tests.fixtures_agent import ListSink, PtyProbe


def tmp(seq: int, value: str = "3.5", unit: str = "C", device: str = "probe-1") -> bytes:
    return encode_frame(Frame(FrameType.TMP, device, seq, (value, unit)))


@contextmanager
def reading(link: SerialLink) -> Iterator[SerialLink]:
    stop = threading.Event()
    thread = threading.Thread(target=link.run, args=(stop,), name="brigade-serial-test")
    thread.start()
    try:
        yield link
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "serial link did not stop"


def make_link(probe: PtyProbe, sink: ListSink, **kwargs: object) -> SerialLink:
    return SerialLink(
        path=str(probe.path),
        sink=sink,
        read_timeout_s=0.05,
        backoff=Backoff(base_s=0.05, cap_s=0.2),
        **kwargs,  # type: ignore[arg-type]
    )


def temperatures(sink: ListSink) -> list[tuple[str, int | None, float]]:
    return [
        (item.device_id, item.seq, round(item.readings[0].value, 2))
        for item in sink.of(Observed)
        if item.readings
    ]


def test_probe_temperatures_reach_the_ingest_in_celsius_with_their_seq(
    pty_probe: PtyProbe, sink: ListSink
) -> None:
    """TMP frames in C and F arrive as numbered Celsius readings; the probe is marked online."""
    with reading(make_link(pty_probe, sink)) as link:
        wait_until(lambda: link.state == "up", timeout=10, what="port open")
        pty_probe.send(tmp(1, "3.5") + tmp(2, "41.0", "F"))
        sink.wait_for(Observed, 2)
    assert temperatures(sink) == [("probe-1", 1, 3.5), ("probe-1", 2, 5.0)]
    assert [(s.device_id, s.online) for s in sink.of(StatusSeen)][:1] == [("probe-1", True)]


def test_garbage_bad_checksums_overlong_and_partial_frames_are_dropped_and_counted(
    pty_probe: PtyProbe, sink: ListSink
) -> None:
    """Every invalid shared serial vector is counted under its reason; valid frames around
    them, including one split across writes, still arrive."""
    invalid = [v for v in load("serial") if not v.valid]
    expected: dict[str, int] = {}
    for vector in invalid:
        assert vector.reason is not None
        expected[vector.reason] = expected.get(vector.reason, 0) + 1
    expected["bad_value"] = 1
    with reading(make_link(pty_probe, sink)) as link:
        wait_until(lambda: link.state == "up", timeout=10, what="port open")
        for vector in invalid:
            raw = vector.raw if vector.raw.endswith(b"\n") else vector.raw + b"\r\n"
            pty_probe.send(raw)
        pty_probe.send(tmp(7, "999"))  # a value no probe can read
        first = tmp(8)
        pty_probe.send(first[:9])
        pty_probe.send(first[9:] + tmp(9))
        sink.wait_for(Observed, 2)
        wait_until(lambda: link.drops.counts() == expected, timeout=10, what=f"drops {expected}")
    assert temperatures(sink) == [("probe-1", 8, 3.5), ("probe-1", 9, 3.5)]


def test_the_link_survives_unplug_and_replug_of_the_device_path(
    pty_probe: PtyProbe, sink: ListSink
) -> None:
    """Path removed and the port hung up: link down, probe offline; path back: readings again."""
    with reading(make_link(pty_probe, sink)) as link:
        wait_until(lambda: link.state == "up", timeout=10, what="port open")
        pty_probe.send(tmp(1))
        sink.wait_for(Observed, 1)
        pty_probe.unplug()
        wait_until(lambda: link.state == "down", timeout=10, what="the unplug to be noticed")
        offline = [s for s in sink.of(StatusSeen) if s.online is False]
        assert [s.device_id for s in offline] == ["probe-1"]
        pty_probe.replug()
        wait_until(lambda: link.state == "up" and link.connects == 2, timeout=10, what="replug")
        pty_probe.send(tmp(2))
        sink.wait_for(Observed, 2)
    assert temperatures(sink) == [("probe-1", 1, 3.5), ("probe-1", 2, 3.5)]
    assert [s.online for s in sink.of(StatusSeen)] == [True, False, True]


@pytest.mark.parametrize("answer", ["ok", "err"])
def test_configuration_is_sent_as_cfg_frames_and_settled_by_the_probe_ack(
    pty_probe: PtyProbe, sink: ListSink, answer: str
) -> None:
    """CFG interval_s,5 goes out on connect; the probe's ACK settles it as ok or err."""
    with reading(make_link(pty_probe, sink, configure={"interval_s": "5"})) as link:
        wait_until(lambda: b"$CFG,agent," in pty_probe.received(), timeout=10, what="CFG")
        assert b",interval_s,5*" in pty_probe.received()
        assert link.config_state() == {"interval_s": "pending"}
        pty_probe.send(encode_frame(Frame(FrameType.ACK, "probe-1", 3, ("interval_s", answer))))
        wait_until(lambda: link.config_state() == {"interval_s": answer}, timeout=10)


def test_an_unanswered_setting_is_sent_again_after_a_replug(
    pty_probe: PtyProbe, sink: ListSink
) -> None:
    """A probe that never acked gets the CFG frame again on its new connection."""
    with reading(make_link(pty_probe, sink, configure={"interval_s": "5"})) as link:
        wait_until(lambda: b"$CFG" in pty_probe.received(), timeout=10, what="first CFG")
        pty_probe.unplug()
        wait_until(lambda: link.state == "down", timeout=10)
        pty_probe.replug()
        wait_until(lambda: b"$CFG" in pty_probe.received(), timeout=10, what="CFG after replug")
        assert link.config_state() == {"interval_s": "pending"}


def test_a_probe_check_frame_reaches_the_monitor_as_a_probe_check(
    pty_probe: PtyProbe, sink: ListSink
) -> None:
    """CHK (reading, reference, unit) arrives as a ProbeCheck in °C and takes its seq like any
    frame (no false gap); a CHK in an unknown unit is dropped as bad_value and counted, and the
    link goes on."""
    bad = encode_frame(Frame(FrameType.CHK, "probe-1", 1, ("0.4", "0.0", "K")))
    good = encode_frame(Frame(FrameType.CHK, "probe-1", 2, ("33.8", "32.0", "F")))
    with reading(make_link(pty_probe, sink)) as link:
        wait_until(lambda: link.state == "up", timeout=10, what="port open")
        pty_probe.send(bad + good)
        sink.wait_for(ProbeCheck, 1)
    [check] = sink.of(ProbeCheck)
    assert (check.device_id, check.probe, check.reading_c, check.reference_c, check.badge) == (
        "probe-1",
        "temp",
        1.0,
        0.0,
        None,
    )
    assert link.drops.counts() == {"bad_value": 1}
    assert [item.seq for item in sink.of(Observed)] == [2]
