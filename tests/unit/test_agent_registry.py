"""The MQTT link's device registry: kinds, online/offline, and faulted equipment kept idle."""

from __future__ import annotations

from edge_agent.links.mqtt import DeviceRegistry
from protocol import Birth, DeviceKind, DeviceMode, State, Status


def registry_with_two_ovens() -> DeviceRegistry:
    registry = DeviceRegistry()
    for oven in ("oven-1", "oven-2"):
        registry.record_birth(
            oven, Birth(device_id=oven, kind=DeviceKind.OVEN, model="m", firmware="1", ts=1.0)
        )
        registry.record_status(oven, Status(state="online"))
    return registry


def test_a_device_whose_state_says_fault_is_failed_and_given_no_work() -> None:
    """oven-1 reports mode fault: health failed, not offered to the executor; back to idle: ok."""
    registry = registry_with_two_ovens()
    registry.record_state("oven-1", State(device_id="oven-1", seq=3, ts=1.0, mode=DeviceMode.FAULT))
    assert registry.devices()["oven-1"].health == "failed"
    assert registry.online_by_kind() == {"oven": ("oven-2",)}
    registry.record_state("oven-1", State(device_id="oven-1", seq=4, ts=2.0, mode=DeviceMode.IDLE))
    assert registry.online_by_kind() == {"oven": ("oven-1", "oven-2")}


def test_an_offline_device_is_reported_offline_whatever_its_last_state() -> None:
    """Last Will offline beats a retained state: health offline, no work."""
    registry = registry_with_two_ovens()
    registry.record_status("oven-2", Status(state="offline"))
    assert registry.devices()["oven-2"].health == "offline"
    assert registry.online_by_kind() == {"oven": ("oven-1",)}
