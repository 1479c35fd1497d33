"""The simulated serial probe through a real pty, read with pyserial as the agent reads it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from protocol import Frame, FrameError, FrameType, decode_frame, encode_frame
from protocol.serial_frames import LineSplitter, parse_temperature
from simulators.processes import wait_until
from simulators.serial_probe import PhysicsSource, ProbeFaults, ScriptedSource, SerialProbe


class HostReader:
    """The agent's side, reduced: pyserial on the link path, frames decoded and drops counted."""

    def __init__(self, path: Path) -> None:
        self.port = serial.Serial(str(path), timeout=0.05)
        self.splitter = LineSplitter()
        self.frames: list[Frame] = []
        self.dropped: Counter[str] = Counter()

    def pump(self) -> None:
        for line in self.splitter.feed(self.port.read(4096)):
            try:
                self.frames.append(decode_frame(line))
            except FrameError as exc:
                self.dropped[exc.reason] += 1
        self.dropped["overlong"] = self.splitter.overlong

    def until(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        def check() -> bool:
            self.pump()
            return bool(condition())

        wait_until(check, timeout=timeout, interval=0.0, what="frames from the probe")

    def of(self, kind: FrameType) -> list[Frame]:
        return [f for f in self.frames if f.type is kind]

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def probe_path(tmp_path: Path) -> Path:
    return tmp_path / "probe-1"


def start_probe(
    path: Path,
    source: ScriptedSource | PhysicsSource,
    *,
    faults: ProbeFaults | None = None,
    seed: int = 0,
    time_scale: float = 1.0,
    started: bool = True,
) -> SerialProbe:
    probe = SerialProbe(
        "probe-1",
        source,
        link_path=path,
        interval_s=0.05,
        faults=faults,
        seed=seed,
        time_scale=time_scale,
    )
    return probe.start() if started else probe


@pytest.fixture
def fridge_probe(probe_path: Path) -> Iterator[SerialProbe]:
    probe = start_probe(probe_path, ScriptedSource([(0, 3.5)]))
    try:
        yield probe
    finally:
        probe.stop()


def test_pyserial_reads_valid_tmp_frames_from_the_link_path(
    fridge_probe: SerialProbe, probe_path: Path
) -> None:
    """Opening the stable path with serial.Serial yields valid TMP frames with rising seq."""
    assert probe_path.is_symlink()
    assert Path(fridge_probe.slave_path).exists()
    reader = HostReader(probe_path)
    try:
        reader.until(lambda: len(reader.of(FrameType.TMP)) >= 5)
    finally:
        reader.close()
    readings = reader.of(FrameType.TMP)
    assert {parse_temperature(f) for f in readings} == {3.5}
    seqs = [f.seq for f in reader.frames]
    assert seqs == sorted(seqs)
    assert sum(reader.dropped.values()) == 0


def test_cfg_from_the_host_is_acked_and_applied(
    fridge_probe: SerialProbe, probe_path: Path
) -> None:
    """A CFG frame written by pyserial comes back as ACK ok and changes the probe's setting."""
    reader = HostReader(probe_path)
    try:
        reader.until(lambda: reader.frames)
        reader.port.write(encode_frame(Frame(FrameType.CFG, "agent", 0, ("unit", "F"))))
        reader.until(lambda: reader.of(FrameType.ACK))
        reader.until(lambda: reader.frames[-1].type is FrameType.TMP)
    finally:
        reader.close()
    assert reader.of(FrameType.ACK)[0].fields == ("unit", "ok")
    assert reader.frames[-1].fields == ("38.3", "F")


def test_line_faults_reach_the_reader_as_configured(probe_path: Path) -> None:
    """Garbage, bad checksums and overlong lines are dropped by the reader with exactly the
    counts the probe injected, and dropouts show as seq gaps."""
    faults = ProbeFaults(
        garbage_rate=0.2, bad_checksum_rate=0.2, overlong_rate=0.1, dropout_rate=0.1
    )
    probe = start_probe(
        probe_path, ScriptedSource([(0, 3.5)]), faults=faults, seed=11, started=False
    )
    # The reader opens the port first: bytes sent to a port nobody has open are lost.
    reader = HostReader(probe_path)
    probe.start()
    try:
        reader.until(lambda: probe.firmware.seq >= 60)
        probe.halt()
        # Everything the probe wrote is in the pty buffer: read it all.
        reader.until(lambda: len(reader.frames) == sum(probe.sent.values()))
    finally:
        probe.stop()
        reader.close()
    injected = probe.injected
    assert injected["garbage"] > 0 and injected["bad_checksum"] > 0 and injected["dropout"] > 0
    assert reader.dropped["non_ascii"] == injected["garbage"]
    assert reader.dropped["bad_checksum"] == injected["bad_checksum"]
    assert reader.dropped["overlong"] == injected["overlong"]
    seqs = [f.seq for f in reader.frames]
    missing = (seqs[-1] - seqs[0] + 1) - len(seqs)
    lost_after_last = probe.firmware.seq - seqs[-1]
    assert (
        missing + lost_after_last + (seqs[0] - 1) == injected["dropout"] + injected["bad_checksum"]
    )


def test_stuck_sensor_repeats_one_value_and_noise_spreads_readings(
    fridge_probe: SerialProbe, probe_path: Path
) -> None:
    """stuck_at_c pins every reading; noise_sd_c spreads them around the true value."""
    reader = HostReader(probe_path)
    try:
        fridge_probe.set_faults(stuck_at_c=12.0)
        reader.until(lambda: [f.fields[0] for f in reader.of(FrameType.TMP)][-3:] == ["12.0"] * 3)
        fridge_probe.set_faults(stuck_at_c=None, noise_sd_c=1.0)
        start = len(reader.frames)
        reader.until(lambda: len(reader.frames) - start >= 30)
    finally:
        reader.close()
    noisy = [parse_temperature(f) for f in reader.frames[start:] if f.type is FrameType.TMP]
    assert len(set(noisy)) > 5
    assert abs(sum(noisy) / len(noisy) - 3.5) < 1.0


def test_open_circuit_sends_err_frames(fridge_probe: SerialProbe, probe_path: Path) -> None:
    """An open-circuit sensor fault turns readings into ERR open_circuit frames."""
    reader = HostReader(probe_path)
    try:
        fridge_probe.set_faults(open_circuit=True)
        reader.until(lambda: reader.of(FrameType.ERR))
    finally:
        reader.close()
    assert reader.of(FrameType.ERR)[0].fields == ("open_circuit",)


def test_unplug_hangs_up_the_port_and_replug_serves_the_same_path(
    fridge_probe: SerialProbe, probe_path: Path
) -> None:
    """After unplug the path is gone and reads fail; after replug the same path works again."""
    reader = HostReader(probe_path)
    reader.until(lambda: reader.frames)
    fridge_probe.unplug()
    assert not probe_path.exists()
    with pytest.raises(serial.SerialException):
        for _ in range(50):
            reader.port.read(100)
    reader.close()
    fridge_probe.replug()
    assert probe_path.exists()
    again = HostReader(probe_path)
    try:
        again.until(lambda: again.of(FrameType.TMP))
    finally:
        again.close()


def test_fridge_compressor_failure_warms_the_probe_reading(probe_path: Path) -> None:
    """A fridge at 3 °C whose compressor fails drifts towards ambient (at 600x time)."""
    source = PhysicsSource.of_kind("fridge", setpoint_c=3.0)
    probe = start_probe(probe_path, source, time_scale=600.0)
    reader = HostReader(probe_path)
    try:
        reader.until(lambda: reader.of(FrameType.TMP))
        first = parse_temperature(reader.of(FrameType.TMP)[0])
        source.fail()
        reader.until(lambda: parse_temperature(reader.of(FrameType.TMP)[-1]) > 8.0, timeout=20)
    finally:
        reader.close()
        probe.stop()
    assert first == pytest.approx(3.0, abs=0.2)
