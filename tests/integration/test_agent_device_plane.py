"""The whole agent with its device plane: real Mosquitto, a real pty probe, the fake control
plane: telemetry and health into the store, hostile input, offline alerts, local metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from edge_agent.config import AgentConfig, SerialPortConfig
from edge_agent.testing import FakeControlPlane
from protocol import Channel, Frame, FrameType, encode_frame
from simulators.broker import Broker
from simulators.processes import wait_until
from tests.fixtures_agent import PtyProbe
from tests.integration.test_agent_mqtt import birth, device_client, publish, status
from tests.integration.test_agent_run import (
    KITCHEN,
    FakeOven,
    agent_config,
    lease,
    running_agent,
)


def telemetry(device: str, seq: int, value: float | str, metric: str = "air_temp") -> bytes:
    return (
        f'{{"v":"1.0","device_id":"{device}","seq":{seq},"ts":{time.time()},'
        f'"readings":[{{"metric":"{metric}","value":{value},"unit":"C"}}]}}'
    ).encode()


def device_config(
    tmp_path: Path, broker: Broker, fake: FakeControlPlane, **extra: object
) -> AgentConfig:
    base = agent_config(tmp_path, broker, "http://cp", fake)
    return base.model_copy(
        update={
            "metrics_port": 0,
            "safety_tick_s": 0.2,
            "ingest_flush_s": 0.05,
            "readings_window_s": 0.5,
            "forward_readings": True,
            **extra,
        }
    )


def test_device_health_and_telemetry_reach_the_store_and_the_control_plane(
    tmp_path: Path, broker: Broker
) -> None:
    """Birth/status become device.status events; telemetry is summarised with its seq gaps
    counted and forwarded in the routine lane."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    with (
        running_agent(device_config(tmp_path, broker, fake), fake) as agent,
        device_client(broker, "fridge") as fridge,
    ):
        publish(fridge, "fridge-1", Channel.BIRTH, birth("fridge-1", "fridge"), retain=True)
        publish(fridge, "fridge-1", Channel.STATUS, status("online"), retain=True)
        wait_until(
            lambda: agent.link is not None and "fridge" in agent.link.registry.online_by_kind(),
            timeout=10,
            what="the agent to see the fridge online",
        )
        for seq in (1, 2, 3, 7):
            publish(fridge, "fridge-1", Channel.TELEMETRY, telemetry("fridge-1", seq, 3.5))
        publish(fridge, "fridge-1", Channel.STATUS, status("offline"), retain=True)
        wait_until(
            lambda: (
                "readings.summary" in fake.event_types()
                and fake.event_types().count("device.status") == 2
            ),
            timeout=20,
            what="status events and a readings summary at the control plane",
        )
        assert agent.store is not None
        device = agent.store.devices()[0]
    assert (device["device_id"], device["kind"], device["status"]) == (
        "fridge-1",
        "fridge",
        "offline",
    )
    assert device["missed_messages"] == 3
    summary = next(e.payload for e in fake.events.values() if e.type == "readings.summary")
    assert summary["count"] == 4 and summary["missed"] == 3 and summary["mean"] == 3.5
    statuses = [e.payload["status"] for e in fake.events.values() if e.type == "device.status"]
    assert statuses == ["online", "offline"]


def test_hostile_payloads_are_dropped_and_counted_while_the_agent_keeps_cooking(
    tmp_path: Path, broker: Broker
) -> None:
    """Wrong JSON, wrong schema, a 200 KB payload, an unknown major, NaN and a device posing
    as the agent: all counted by reason; a leased task still runs to done."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.offer(lease("task-h"))
    oven = FakeOven(broker, auto_finish=True)
    hostile = [
        ("oven-1", Channel.TELEMETRY, b"{not json"),
        ("oven-1", Channel.TELEMETRY, b'{"v":"1.0","device_id":"oven-1","seq":"x"}'),
        ("oven-1", Channel.EVENT, b"{" + b" " * 200_000 + b"}"),
        ("oven-1", Channel.ACK, b'{"v":"2.0","command_id":"c","device_id":"oven-1"}'),
        ("oven-1", Channel.TELEMETRY, telemetry("oven-1", 1, "NaN")),
        ("oven-1", Channel.BIRTH, b"\x00\xff" * 10),
    ]
    try:
        with (
            running_agent(device_config(tmp_path, broker, fake), fake) as agent,
            device_client(broker, "attacker") as attacker,
        ):
            wait_until(lambda: agent.link is not None and agent.link.connected, timeout=10)
            for device, channel, payload in hostile * 20:
                publish(attacker, device, channel, payload)
            publish(
                attacker,
                "agent",
                Channel.ACK,
                b'{"v":"1.0","command_id":"task-h.s0.a1","device_id":"agent","result":"done",'
                b'"ts":1}',
            )
            wait_until(lambda: "task.done" in fake.event_types("task-h"), timeout=30)
            link = agent.link
            assert link is not None
            wait_until(lambda: sum(link.drops.counts().values()) >= 120, timeout=10)
            drops = link.drops.counts()
    finally:
        oven.close()
    assert drops == {
        "not_json": 40,
        "invalid_message": 20,
        "too_large": 20,
        "unsupported_version": 20,
        "non_finite": 20,
    }
    assert fake.event_types("task-h")[-1] == "task.done"


def test_a_probe_breach_raises_an_alert_offline_that_arrives_after_the_heal(
    tmp_path: Path, broker: Broker, pty_probe: PtyProbe
) -> None:
    """Control plane answering 503: a serial probe too warm past its delay raises a durable
    critical alert locally; when the control plane is back the alert arrives in seq order."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    fake.fail_status = 503
    config = device_config(
        tmp_path,
        broker,
        fake,
        serial_ports=[SerialPortConfig(path=str(pty_probe.path))],
        safety_overrides={"probe-1": {"mode": "cold", "breach_delay_s": 0.3, "alarm_c": 9.5}},
    )
    with running_agent(config, fake) as agent:
        wait_until(
            lambda: [s.state for s in agent.serial_links] == ["up"], timeout=10, what="serial up"
        )
        for seq in range(1, 6):
            pty_probe.send(encode_frame(Frame(FrameType.TMP, "probe-1", seq, ("9.0", "C"))))
        store = agent.store
        assert store is not None
        wait_until(
            lambda: any(a["kind"] == "cold_holding_breach" for a in store.alerts()),
            timeout=20,
            what="the breach alert",
        )
        assert fake.events == {}
        fake.fail_status = None
        wait_until(lambda: "alert.raised" in fake.event_types(), timeout=30, what="the drain")
        evidence = store.evidence(device_id="probe-1")
    alert = next(e for e in fake.events.values() if e.type == "alert.raised")
    assert alert.payload["kind"] == "cold_holding_breach"
    assert alert.payload["severity"] == "critical"
    assert alert.payload["value"] == 9.0 and alert.payload["limit"] == 5.0
    assert any(
        e.reason == "excursion" and e.alert_id == alert.payload["alert_id"] for e in evidence
    )
    assert sorted(fake.events) == list(range(1, len(fake.events) + 1))


def test_local_metrics_and_healthz_describe_the_running_agent(
    tmp_path: Path, broker: Broker
) -> None:
    """/metrics has outbox, links, drops, tasks and disk; /healthz is 503 while sync fails."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    with running_agent(device_config(tmp_path, broker, fake), fake) as agent:
        wait_until(lambda: agent.metrics_port is not None and agent.sync_ok.is_set(), timeout=20)
        base = f"http://127.0.0.1:{agent.metrics_port}"
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        health = httpx.get(f"{base}/healthz", timeout=5)
        fake.fail_status = 503
        wait_until(lambda: not agent.sync_ok.is_set(), timeout=20, what="sync to fail")
        degraded = httpx.get(f"{base}/healthz", timeout=5)
    for name in (
        "brigade_agent_outbox_depth",
        "brigade_agent_outbox_oldest_event_age_seconds",
        "brigade_agent_sync_lag_seconds",
        'brigade_agent_link_up{link="mqtt"} 1.0',
        "brigade_agent_readings_ingested_total",
        "brigade_agent_disk_bytes",
        "brigade_agent_store_used_bytes",
    ):
        assert name in metrics
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert degraded.status_code == 503
    body = json.loads(degraded.text)
    assert body["links"]["control_plane"] == "down" and "outbox_depth" in body


def test_an_agent_with_a_metrics_port_in_use_still_runs(tmp_path: Path, broker: Broker) -> None:
    """Two agents asking for the same metrics port: the second runs without metrics."""
    fake = FakeControlPlane(kitchen_id=KITCHEN)
    with running_agent(device_config(tmp_path / "a", broker, fake), fake) as one:
        wait_until(lambda: one.metrics_port is not None, timeout=10)
        taken = device_config(tmp_path / "b", broker, fake, metrics_port=one.metrics_port)
        with running_agent(taken, fake) as two:
            wait_until(two.sync_ok.is_set, timeout=20, what="the second agent to sync")
            assert two.metrics_port is None
