"""Equipment health from the agent's ``device.status`` events on a real ``brigade serve``."""

from __future__ import annotations

from protocol.events import EventType
from tests.fixtures_cp import StartControlPlane
from tests.integration.test_cp_api import ready_kitchen
from tests.integration.test_cp_sync import enrolled_agent


def test_a_degraded_device_is_degraded_equipment_and_recovers_to_ok(
    start_control_plane: StartControlPlane,
) -> None:
    """online -> degraded (with its reason, audited) -> failed -> ok -> offline, as the agent
    reports them through the sync path."""
    control_plane = start_control_plane()
    with ready_kitchen(control_plane) as http:
        agent = enrolled_agent(control_plane, http)
        try:

            def report(**payload: str) -> str:
                event = agent.event(
                    EventType.DEVICE_STATUS, {"device_id": "fryer-1", "kind": "fryer", **payload}
                )
                assert agent.sync([event]).acked_seq == event.seq
                equipment = http.get("/v1/kitchens/k1/equipment").json()["equipment"]
                return str(next(e["health"] for e in equipment if e["id"] == "fryer-1"))

            assert report(status="online") == "ok"
            assert (
                report(status="online", health="degraded", reason="temperature_alarm") == "degraded"
            )
            assert report(status="online", health="failed", reason="fault") == "failed"
            assert report(status="online", health="ok") == "ok"
            assert report(status="offline") == "offline"
            records = http.get(
                "/v1/audit", params={"subject_type": "equipment", "subject_id": "fryer-1"}
            ).json()["records"]
            assert [(r["action"], r["reason"]) for r in records] == [
                ("device.online", None),
                ("device.degraded", "temperature_alarm"),
                ("device.failed", "fault"),
                ("device.ok", None),
                ("device.offline", None),
            ]
        finally:
            agent.close()
