"""Process faults: crash/restart of the broker and the control plane, frozen processes, and a
skewed wall clock for a child process."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Broker
from simulators.process_faults import crashed, frozen, process_state, restart
from simulators.processes import ManagedProcess, port_open, wait_until
from simulators.services import ControlPlane
from simulators.wallclock import skewed_argv


def retained_on(broker: Broker, topic: str) -> bytes:
    """The retained message on ``topic``, read by a fresh client."""
    got: list[bytes] = []
    subscribed: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    client.on_subscribe = lambda *_a: subscribed.append(True)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        wait_until(lambda: bool(subscribed), timeout=5, what="subscription")
        # Mosquitto sends retained messages right after the SUBACK.
        wait_until(lambda: bool(got), timeout=5, what=f"retained message on {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_broker_restart_after_crash_keeps_port_and_retained_state(broker: Broker) -> None:
    """A crashed broker comes back on the same port with its autosaved retained messages."""
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    publisher.publish(
        "brigade/v1/k1/oven-1/status", b"online", qos=1, retain=True
    ).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()
    # Mosquitto autosaves every second (autosave_interval 1): a graceful stop saves for certain.
    restart(broker, crash=False)
    assert port_open(broker.host, broker.port)
    with crashed(broker):
        assert not port_open(broker.host, broker.port)
    assert retained_on(broker, "brigade/v1/k1/oven-1/status") == b"online"


def test_control_plane_crash_and_restart_serves_again(tmp_path: Path) -> None:
    """A SIGKILLed control plane restarts on the same port and database and answers healthy."""
    server = ControlPlane(tmp_path / "cp").start()
    try:
        first_pid = server.process.pid
        with crashed(server):
            assert not server.healthy()
        assert server.healthy()
        assert server.process.pid != first_pid
    finally:
        server.stop()


def test_frozen_process_is_stopped_then_continues(tmp_path: Path) -> None:
    """Inside frozen() the process is in state T (stopped); after it, it runs again."""
    sleeper = ManagedProcess("sleeper", ["sleep", "30"], log_path=tmp_path / "s.log").start()
    try:
        with frozen(sleeper):
            wait_until(lambda: process_state(sleeper.pid) == "T", timeout=5, what="stopped")
        wait_until(lambda: process_state(sleeper.pid) in "RS", timeout=5, what="running")
    finally:
        sleeper.stop()
    assert not sleeper.running()


@pytest.mark.parametrize("skew_s", [3600.0, -7200.0])
def test_skewed_child_sees_shifted_wall_clock_and_true_monotonic(
    tmp_path: Path, skew_s: float
) -> None:
    """A child run through skewed_argv reads time.time() off by the skew; monotonic is not."""
    script = tmp_path / "clock.py"
    script.write_text(
        "import json, time\nprint(json.dumps({'wall': time.time(), 'mono': time.monotonic()}))\n"
    )
    before = time.time()
    out = subprocess.run(
        skewed_argv([str(script)], skew_s),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=tmp_path,
    ).stdout
    after = time.time()
    seen = json.loads(out)
    assert before + skew_s <= seen["wall"] <= after + skew_s
    assert abs(seen["mono"] - time.monotonic()) < 30
