"""HACCP evidence end to end: a fridge on a real Mosquitto, a real ``brigade-agent run``, the
real sync path into a real ``brigade serve``, and ``GET /v1/kitchens/{id}/haccp``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import load_config, save_config
from protocol import Birth, Channel, DeviceEvent, DeviceKind, Status, encode_message, topic_for
from protocol.events import EventType
from protocol.messages import Reading, Telemetry
from simulators.broker import Broker
from simulators.processes import ManagedProcess, wait_until
from simulators.services import ControlPlane, console_script, run_cli
from tests.fixtures_cp import StartControlPlane
from tests.integration.test_cp_api import ready_kitchen
from tests.integration.test_cp_sync import enrolled_agent

KITCHEN = "k1"
FRIDGE = "fridge-1"


class Fridge:
    """A fridge's MQTT side, driven by the test: birth, online, telemetry, a staff action."""

    def __init__(self, broker: Broker) -> None:
        self.seq = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="fridge-1", protocol=mqtt.MQTTv5
        )
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        birth = Birth(device_id=FRIDGE, kind=DeviceKind.FRIDGE, model="t", firmware="1", ts=now())
        self._publish(Channel.BIRTH, encode_message(birth), retain=True)
        self._publish(Channel.STATUS, encode_message(Status(state="online")), retain=True)

    def _publish(self, channel: Channel, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic_for(KITCHEN, FRIDGE, channel), payload, 1, retain)
        info.wait_for_publish(10)

    def reading(self, value_c: float) -> None:
        self.seq += 1
        telemetry = Telemetry(
            device_id=FRIDGE,
            seq=self.seq,
            ts=now(),
            readings=[Reading(metric="air_temp", value=value_c, unit="C")],
        )
        self._publish(Channel.TELEMETRY, encode_message(telemetry))

    def corrective_action(self, alert_id: str, action: str, badge: str) -> None:
        self.seq += 1
        event = DeviceEvent(
            device_id=FRIDGE,
            seq=self.seq,
            ts=now(),
            event="corrective_action",
            data={"alert_id": alert_id, "action": action, "badge": badge},
        )
        self._publish(Channel.EVENT, encode_message(event))

    def probe_check(self, reading_c: float, reference_c: float, badge: str) -> None:
        self.seq += 1
        event = DeviceEvent(
            device_id=FRIDGE,
            seq=self.seq,
            ts=now(),
            event="probe_check",
            data={
                "probe": "air_temp",
                "reading_c": reading_c,
                "reference_c": reference_c,
                "badge": badge,
            },
        )
        self._publish(Channel.EVENT, encode_message(event))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def now() -> float:
    return time.time()


@pytest.fixture
def kitchen_agent(
    tmp_path: Path, broker: Broker, control_plane: ControlPlane
) -> Iterator[ManagedProcess]:
    """An enrolled ``brigade-agent run`` for kitchen k1 whose fridge breaches at once (no
    allowance) so the test need not wait half an hour for an alert."""
    with control_plane.client() as http:
        created = http.post(
            "/v1/kitchens",
            json={
                "id": KITCHEN,
                "name": "K",
                "timezone": "UTC",
                "stations": [{"id": "cold", "name": "Cold"}],
            },
        )
        assert created.status_code == 201, created.text
        token = http.post(
            "/v1/enrollment-tokens", json={"kitchen_id": KITCHEN, "ttl_s": 300}
        ).json()["token"]
    config_path = tmp_path / "agent" / "agent.json"
    run_cli(
        "brigade-agent",
        "enroll",
        "--url",
        control_plane.url,
        "--token",
        token,
        "--config",
        str(config_path),
    )
    config = load_config(config_path).model_copy(
        update={
            "sync_interval_s": 0.2,
            "safety_overrides": {FRIDGE: {"breach_delay_s": 0.0, "alarm_delay_s": 3600.0}},
        }
    )
    save_config(config, config_path)
    agent = ManagedProcess(
        "agent",
        [
            console_script("brigade-agent"),
            "run",
            "--config",
            str(config_path),
            "--mqtt-host",
            broker.host,
            "--mqtt-port",
            str(broker.port),
            "--data-dir",
            str(tmp_path / "agent" / "data"),
        ],
        log_path=tmp_path / "agent" / "agent.log",
    ).start()
    try:
        yield agent
    finally:
        agent.stop()


def wait_for_fridge(http: httpx.Client) -> None:
    """The agent has heard the fridge (and so is subscribed to the kitchen's topics)."""

    def reported() -> bool:
        equipment = http.get(f"/v1/kitchens/{KITCHEN}/equipment").json()["equipment"]
        return any(e["id"] == FRIDGE for e in equipment)

    wait_until(reported, timeout=30, interval=0.2, what="fridge reported")


def evidence(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get(f"/v1/kitchens/{KITCHEN}/haccp", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["evidence"])


def test_excursion_evidence_and_the_staff_action_reach_the_control_plane(
    kitchen_agent: ManagedProcess, broker: Broker, control_plane: ControlPlane
) -> None:
    """A fridge at 3 °C then 9 °C: the interval sample and the excursion readings (value, time,
    device, probe, limit, alert) are queryable on the control plane, and the corrective action
    staff record at the fridge is written on that alert's evidence with their badge."""
    fridge = Fridge(broker)
    started = now()
    try:
        with control_plane.client() as http:
            wait_for_fridge(http)
            fridge.reading(3.0)
            fridge.reading(9.0)
            fridge.reading(9.5)

            def excursions() -> list[dict[str, Any]]:
                assert kitchen_agent.running(), kitchen_agent.log_tail()
                return [e for e in evidence(http) if e["reason"] == "excursion" and e["alert_id"]]

            wait_until(
                lambda: bool(excursions()), timeout=30, interval=0.2, what="excursion evidence"
            )
            rows = evidence(http)
            interval = [e for e in rows if e["reason"] == "interval"]
            assert [e["value_c"] for e in interval] == [3.0]
            proof = excursions()[0]
            assert proof["equipment_id"] == FRIDGE and proof["probe"] == "air_temp"
            assert proof["value_c"] in (9.0, 9.5) and proof["limit_c"] == 5.0
            measured = datetime.fromisoformat(proof["measured_at"]).timestamp()
            assert started - 1 <= measured <= now() + 1  # the reading's own time, not a sync's
            alert_id = proof["alert_id"]

            fridge.corrective_action(alert_id, "discarded", "badge-7")

            def acted() -> list[dict[str, Any]]:
                return [e for e in evidence(http) if e["alert_id"] == alert_id and e["acted_by"]]

            wait_until(lambda: bool(acted()), timeout=30, interval=0.2, what="corrective action")
            assert {(e["corrective_action"], e["acted_by"]) for e in acted()} == {
                ("discarded", "badge-7")
            }
            alerts = http.get("/v1/alerts", params={"kitchen_id": KITCHEN}).json()["alerts"]
            breach = next(a for a in alerts if a["alert_id"] == alert_id)
            assert breach["corrective_action"] == "discarded"
    finally:
        fridge.close()


def test_a_failed_probe_check_is_compliance_evidence_with_an_alert_on_the_control_plane(
    kitchen_agent: ManagedProcess, broker: Broker, control_plane: ControlPlane
) -> None:
    """Staff check the fridge probe in iced water: it reads 1.6 °C. The check (value,
    reference, badge) is HACCP evidence on the control plane and a probe_inaccurate alert."""
    fridge = Fridge(broker)
    try:
        with control_plane.client() as http:
            wait_for_fridge(http)
            fridge.reading(3.0)
            fridge.probe_check(1.6, 0.0, "badge-2")

            def checks() -> list[dict[str, Any]]:
                assert kitchen_agent.running(), kitchen_agent.log_tail()
                return [e for e in evidence(http) if e["reason"] == "probe_check"]

            wait_until(
                lambda: bool(checks()), timeout=30, interval=0.2, what="probe check evidence"
            )
            [check] = checks()
            assert (check["value_c"], check["limit_c"], check["acted_by"]) == (1.6, 0.0, "badge-2")
            alerts = http.get("/v1/alerts", params={"kitchen_id": KITCHEN}).json()["alerts"]
            [inaccurate] = [a for a in alerts if a["alert_id"] == check["alert_id"]]
            assert inaccurate["kind"] == "probe_inaccurate"
    finally:
        fridge.close()


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def reading(device_id: str, value_c: float, at: float, **extra: Any) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "probe": "air_temp",
        "value_c": value_c,
        "measured_at": at,
        "reason": "interval",
        **extra,
    }


def test_evidence_is_filtered_by_time_and_equipment_and_paged(
    start_control_plane: StartControlPlane,
) -> None:
    """since/until bound the measurement time, equipment_id the device; pages follow the
    cursor; a resent batch (same seqs) stores nothing twice; an unknown kitchen is 404."""
    control_plane = start_control_plane()
    with ready_kitchen(control_plane) as http:
        agent = enrolled_agent(control_plane, http)
        try:
            base = now() - 7200  # in the past: nothing is measured after it is received
            batch = [
                agent.event(
                    EventType.HACCP_EVIDENCE,
                    {"readings": [reading("fridge-1", 3.0, base), reading("hot-1", 64.0, base)]},
                ),
                agent.event(
                    EventType.HACCP_EVIDENCE,
                    {
                        "readings": [
                            reading("fridge-1", 3.5, base + 900),
                            reading("fridge-1", 4.0, base + 1800),
                        ]
                    },
                ),
            ]
            assert agent.sync(batch).acked_seq == 2
            assert agent.sync(batch).acked_seq == 2  # a retry after a lost answer
            assert len(evidence(http)) == 4
            window = evidence(
                http, since=iso(base + 1), until=iso(base + 1800), equipment_id="fridge-1"
            )
            assert [e["value_c"] for e in window] == [3.5]
            assert [e["equipment_id"] for e in evidence(http, equipment_id="hot-1")] == ["hot-1"]
            pages, cursor = [], None
            while True:
                params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
                page = http.get(f"/v1/kitchens/{KITCHEN}/haccp", params=params).json()
                pages.append([e["value_c"] for e in page["evidence"]])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert pages == [[3.0, 64.0, 3.5], [4.0]]
            assert http.get("/v1/kitchens/nowhere/haccp").status_code == 404
        finally:
            agent.close()


def test_evidence_time_filter_uses_the_server_timeline_and_keeps_the_reported_time(
    start_control_plane: StartControlPlane,
) -> None:
    """A box whose clock runs an hour ahead: ``since``/``until`` bound the reading's time on the
    control plane's timeline (``measured_server_at``), while ``measured_at`` stays as reported."""
    control_plane = start_control_plane()
    with ready_kitchen(control_plane) as http:
        agent = enrolled_agent(control_plane, http, skew_s=3600)
        try:
            agent.sync([])  # the server learns the box's clock offset
            taken = now() - 600  # server time of the reading
            reported = taken + 3600  # what the fast box's clock said
            batch = [
                agent.event(
                    EventType.HACCP_EVIDENCE, {"readings": [reading("fridge-1", 3.0, reported)]}
                )
            ]
            assert agent.sync(batch).acked_seq == 1
            (kept,) = evidence(http)
            server_at = datetime.fromisoformat(kept["measured_server_at"]).timestamp()
            reported_at = datetime.fromisoformat(kept["measured_at"]).timestamp()
            assert reported_at == pytest.approx(reported, abs=0.01)
            assert server_at == pytest.approx(taken, abs=60)
            assert evidence(http, since=iso(taken - 300), until=iso(taken + 300)) != []
            assert evidence(http, since=iso(reported - 300), until=iso(reported + 300)) == []
        finally:
            agent.close()
