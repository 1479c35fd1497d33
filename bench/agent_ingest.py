"""``agent-ingest``: MQTT QoS 1 telemetry readings/s sustained into the agent's durable store,
and the agent's RSS meanwhile, against a bare paho-mqtt subscriber that discards (same run,
same broker, same publisher flood).

Both subscribers are separate processes fed by the same publisher process (QoS 1, one reading
per message, numbered); a rate is ``readings / (last taken in - publishing started)``. For
the agent "taken in" means counted by its ingest loop (``/metrics``), i.e. decoded, checked for
seq gaps, run through the food-safety monitor and aggregated into summaries that are committed
(``synchronous=FULL``, group commit every ``ingest_flush_s``; the one documented weaker
durability is that the last flush interval of routine readings can be lost to a power cut).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.results import Result
from edge_agent.config import AgentConfig, save_config
from edge_agent.testing import FakeControlPlane
from simulators.broker import Broker
from simulators.processes import ManagedProcess, free_port, wait_until

BENCHMARK = "agent-ingest"
KITCHEN = "bench-k"


def _publish(host: str, port: int, count: int) -> None:
    """Publisher role: ``count`` QoS 1 telemetry messages from one fridge, as fast as acked."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect(host, port)
    client.loop_start()
    topic = f"brigade/v1/{KITCHEN}/fridge-1/telemetry"
    print(json.dumps({"started": time.time()}), flush=True)
    info = None
    for seq in range(1, count + 1):
        payload = (
            f'{{"v":"1.0","device_id":"fridge-1","seq":{seq},"ts":{time.time():.3f},'
            f'"readings":[{{"metric":"air_temp","value":{3.0 + (seq % 10) / 10},"unit":"C"}}]}}'
        )
        info = client.publish(topic, payload, qos=1)
    if info is not None:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


def _subscribe(host: str, port: int, count: int) -> None:
    """Baseline role: a bare paho subscriber that discards; prints when it got ``count``."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    received = 0

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(host, port)
    client.subscribe(f"brigade/v1/{KITCHEN}/+/+", qos=1)
    client.loop_start()
    subscribed.wait(10)
    print(json.dumps({"ready": True}), flush=True)
    done.wait(300)
    print(json.dumps({"last": time.time(), "received": received}), flush=True)
    client.disconnect()
    client.loop_stop()


def _role(role: str, host: str, port: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.agent_ingest", role, host, str(port), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def _line(process: subprocess.Popen[str]) -> dict[str, float]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("benchmark helper process ended early")
    value: dict[str, float] = json.loads(line)
    return value


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _baseline(broker: Broker, count: int) -> tuple[float, float]:
    """The bare subscriber's rate and its CPU time per reading (µs)."""
    subscriber = _role("subscribe", broker.host, broker.port, count)
    try:
        _line(subscriber)
        cpu_before = _cpu_s(subscriber.pid)
        publisher = _role("publish", broker.host, broker.port, count)
        started = _line(publisher)["started"]
        finished = _line(subscriber)
        cpu = _cpu_s(subscriber.pid) - cpu_before
        publisher.wait(timeout=120)
    finally:
        subscriber.kill()
        subscriber.wait(timeout=10)
    return count / (finished["last"] - started), cpu / count * 1e6


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _agent(
    tmp: Path, broker: Broker, url: str, fake: FakeControlPlane, count: int
) -> tuple[float, float, dict[str, float]]:
    port = free_port()
    config = AgentConfig(
        agent_id=fake.agent_id,
        kitchen_id=KITCHEN,
        credential=fake.credential,
        control_plane_url=url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        data_dir=tmp / "agent-data",
        metrics_port=port,
        readings_window_s=1.0,
    )
    save_config(config, tmp / "agent.json")
    agent = ManagedProcess(
        "bench-agent",
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(tmp / "agent.json")],
        log_path=tmp / "agent.log",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    metrics_url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> str:
        try:
            return httpx.get(metrics_url, timeout=2).text
        except httpx.HTTPError:
            return ""

    agent.start()
    try:
        wait_until(
            lambda: 'brigade_agent_link_up{link="mqtt"} 1.0' in scrape(),
            timeout=30,
            what=f"the agent to connect\n{agent.log_tail()}",
        )
        rss_idle = _rss_kb(agent.pid, "VmRSS")
        cpu_before = _cpu_s(agent.pid)
        publisher = _role("publish", broker.host, broker.port, count)
        started = _line(publisher)["started"]
        peak = 0
        cpu = float("nan")
        deadline = time.monotonic() + 120
        # A scrape costs the agent CPU (store queries, rendering): poll at 5 Hz, not faster,
        # and place the moment the last reading was counted by interpolating between the last
        # two scrapes (the flood is steady), so the coarse poll does not lengthen the run.
        last_at, last_n = started, 0.0
        finished = started
        while time.monotonic() < deadline:
            peak = max(peak, _rss_kb(agent.pid, "VmRSS"))
            at = time.time()
            n = _metric(scrape(), "brigade_agent_readings_ingested_total")
            if n >= count:
                cpu = _cpu_s(agent.pid) - cpu_before
                finished = last_at + (at - last_at) * (count - last_n) / max(n - last_n, 1.0)
                break
            last_at, last_n = at, n
            time.sleep(0.2)  # a polling interval, not a synchronisation
        publisher.wait(timeout=120)
        final = scrape()
        extra = {
            "ingested": _metric(final, "brigade_agent_readings_ingested_total"),
            "missed": _metric(final, "brigade_agent_device_messages_missed_total"),
            "rss_idle_mb": rss_idle / 1024,
            "rss_hwm_mb": _rss_kb(agent.pid, "VmHWM") / 1024,
            # CPU per reading is what decides the rate on a shared machine; it is less noisy
            # than the rates when other processes compete for the cores (NaN: never finished).
            "agent_cpu_us_per_reading": cpu / count * 1e6,
        }
    finally:
        agent.stop()
    return count / (finished - started), peak / 1024, extra


def run(*, count: int = 40_000) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="brigade-bench-ingest-", dir=Path.cwd()) as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker").start()
        fake = FakeControlPlane(kitchen_id=KITCHEN)
        try:
            with fake.serve() as url:
                baseline, baseline_cpu = _baseline(broker, count)
                rate, rss_peak, extra = _agent(tmp, broker, url, fake, count)
        finally:
            broker.stop()
    params = {
        "readings": count,
        "qos": 1,
        "publisher_inflight": 100,
        **extra,
        "baseline_cpu_us_per_reading": baseline_cpu,
    }
    return [
        Result(
            BENCHMARK,
            "QoS 1 readings/s into the store",
            rate,
            "readings/s",
            baseline="bare paho subscriber (discards)",
            baseline_value=baseline,
            params=params,
            goal="ratio >= 0.8",
        ),
        Result(
            BENCHMARK,
            "agent RSS during the flood",
            rss_peak,
            "MB",
            params=params,
            goal="<= 60 MB",
        ),
    ]


if __name__ == "__main__":
    role, host, port_text, count_text = sys.argv[1:5]
    {"publish": _publish, "subscribe": _subscribe}[role](host, int(port_text), int(count_text))
