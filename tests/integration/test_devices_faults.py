"""Equipment faults over a real broker: a dead oven element and a warm fridge, as the agent
would see them on the kitchen bus."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from simulators.broker import Broker
from simulators.devices import SimulatedDevice
from tests.integration.test_devices_mqtt import FAST, KITCHEN, Observer


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    """The kitchen's whole topic tree, recorded (the device MQTT tests' observer)."""
    watcher = Observer(broker.port)
    try:
        yield watcher
    finally:
        watcher.close()


def events(observer: Observer, device_id: str) -> list[dict[str, object]]:
    return [json.loads(payload) for payload, _ in observer.on(device_id, "event")]


def test_oven_with_a_dead_element_reports_element_fault_and_rejects_the_batch(
    broker: Broker, observer: Observer
) -> None:
    """A cook on an oven whose element died: accepted, then element_fault and rejected."""
    oven = SimulatedDevice("oven", KITCHEN, "oven-1", mqtt_port=broker.port, time_scale=FAST)
    oven.fail_element()
    with oven:
        observer.command("oven-1", "t-1.s0.a1", "cook", setpoint_c=180, duration_s=60)
        observer.wait_for(
            lambda: [a.result.value for a in observer.acks("oven-1")] == ["accepted", "rejected"],
            "accepted then rejected",
        )
    assert observer.acks("oven-1")[-1].reason == "element_fault"
    fault = next(e for e in events(observer, "oven-1") if e["event"] == "element_fault")
    assert fault["severity"] == "critical"
    assert fault["data"] == {"command_id": "t-1.s0.a1", "setpoint_c": 180.0, "task_id": "t-1"}


def test_fridge_with_a_failed_compressor_raises_a_temperature_alarm(
    broker: Broker, observer: Observer
) -> None:
    """At 600x a failed compressor warms the fridge past its band: temperature_alarm."""
    fridge = SimulatedDevice("fridge", KITCHEN, "fridge-1", mqtt_port=broker.port, time_scale=600)
    with fridge:
        fridge.fail_element()
        observer.wait_for(
            lambda: any(e["event"] == "temperature_alarm" for e in events(observer, "fridge-1")),
            "temperature_alarm",
            timeout=20,
        )
    alarm = next(e for e in events(observer, "fridge-1") if e["event"] == "temperature_alarm")
    assert alarm["data"]["temp_c"] > 6.0  # type: ignore[index]
