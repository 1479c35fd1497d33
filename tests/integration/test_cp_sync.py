"""Agents against a real ``brigade serve``: enrollment, leases, sync, reconciliation, audit."""

from __future__ import annotations

import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from protocol.base import encode_message
from protocol.events import EventEnvelope, EventType
from protocol.sync_api import (
    EnrollRequest,
    EnrollResponse,
    Heartbeat,
    Lease,
    LeaseRenewal,
    SyncRequest,
    SyncResponse,
)
from tests.fixtures_cp import StartControlPlane
from tests.harness import ControlPlane, console_script
from tests.integration.test_cp_api import order_body, place_order, ready_kitchen

JSON = {"Content-Type": "application/json"}


def enrollment_token(client: httpx.Client, kitchen_id: str = "k1", ttl_s: float = 3600) -> str:
    response = client.post("/v1/enrollment-tokens", json={"kitchen_id": kitchen_id, "ttl_s": ttl_s})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def redeem(control_plane: ControlPlane, token: str) -> httpx.Response:
    request = EnrollRequest(token=token, name="box-1", agent_version="0.1.0")
    return httpx.post(
        f"{control_plane.url}/v1/agents/enroll",
        content=encode_message(request),
        headers=JSON,
        timeout=10,
    )


class ScriptedAgent:
    """Plays an edge agent's side of the sync protocol, one request at a time."""

    def __init__(self, control_plane: ControlPlane, identity: EnrollResponse, skew_s: float = 0):
        self.identity = identity
        self.skew_s = skew_s  # how far this box's wall clock is ahead of the server's
        self.next_seq = 1
        self.http = httpx.Client(
            base_url=control_plane.url,
            headers={"Authorization": f"Bearer {identity.credential}", **JSON},
            timeout=10,
        )

    def close(self) -> None:
        self.http.close()

    def clock(self) -> float:
        return time.time() + self.skew_s

    def event(
        self, event_type: str, payload: dict[str, Any], *, late_s: float = 0
    ) -> EventEnvelope:
        """The next outbox event; ``late_s`` shifts when it happened into the future."""
        envelope = EventEnvelope(
            agent_id=self.identity.agent_id,
            kitchen_id=self.identity.kitchen_id,
            seq=self.next_seq,
            event_id=str(uuid.uuid4()),
            type=event_type,
            occurred_at=self.clock() + late_s,
            payload=payload,
        )
        self.next_seq += 1
        return envelope

    def post(
        self,
        events: list[EventEnvelope] | None = None,
        *,
        renewals: list[LeaseRenewal] | None = None,
        want_leases: int = 0,
    ) -> httpx.Response:
        request = SyncRequest(
            heartbeat=Heartbeat(agent_version="0.1.0", sent_at=self.clock(), outbox_depth=0),
            events=events or [],
            renewals=renewals or [],
            want_leases=want_leases,
        )
        return self.http.post("/v1/agents/sync", content=encode_message(request))

    def sync(self, events: list[EventEnvelope] | None = None, **kwargs: Any) -> SyncResponse:
        response = self.post(events, **kwargs)
        assert response.status_code == 200, response.text
        return SyncResponse.model_validate_json(response.content)


@pytest.fixture
def control_plane(start_control_plane: StartControlPlane) -> ControlPlane:
    """A real ``brigade serve`` placing tasks as early as possible: these tests are about
    leases and sync, so an order's task must be leasable (and due to start) at once."""
    return start_control_plane(planning_mode="asap")


@pytest.fixture
def kitchen(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    """An admin client of a control plane with kitchen k1 and SKU burger."""
    with ready_kitchen(control_plane) as client:
        yield client


def enrolled_agent(
    control_plane: ControlPlane, client: httpx.Client, skew_s: float = 0
) -> ScriptedAgent:
    response = redeem(control_plane, enrollment_token(client))
    assert response.status_code == 201, response.text
    return ScriptedAgent(
        control_plane, EnrollResponse.model_validate_json(response.content), skew_s
    )


def leased_order(
    control_plane: ControlPlane, client: httpx.Client, skew_s: float = 0
) -> tuple[ScriptedAgent, str, Lease]:
    """An enrolled agent holding the lease of a freshly placed order's only task."""
    order_id = place_order(client, order_body()).json()["id"]
    agent = enrolled_agent(control_plane, client, skew_s)
    answer = agent.sync(want_leases=4)
    assert len(answer.leases) == 1
    return agent, order_id, answer.leases[0]


def started(agent: ScriptedAgent, lease: Lease, **kwargs: Any) -> EventEnvelope:
    payload = {
        "task_id": lease.task_id,
        "fencing_token": lease.fencing_token,
        "station_id": "grill",
    }
    return agent.event(EventType.TASK_STARTED, payload | {"staff_badge": "badge-7"}, **kwargs)


def done(agent: ScriptedAgent, lease: Lease, **kwargs: Any) -> EventEnvelope:
    payload = {"task_id": lease.task_id, "fencing_token": lease.fencing_token, "quantity": 2}
    return agent.event(EventType.TASK_DONE, payload, **kwargs)


def audit_actions(client: httpx.Client, order_id: str) -> list[str]:
    return [r["action"] for r in client.get(f"/v1/orders/{order_id}/audit").json()["records"]]


def test_enrollment_token_is_single_use(control_plane: ControlPlane, kitchen: httpx.Client) -> None:
    """The first redemption gets an identity for the token's kitchen; the second is refused."""
    token = enrollment_token(kitchen)
    first = redeem(control_plane, token)
    second = redeem(control_plane, token)
    identity = EnrollResponse.model_validate_json(first.content)
    assert (first.status_code, identity.kitchen_id) == (201, "k1")
    assert second.status_code == 403
    assert second.json()["reason"] == "token_used"


def test_unknown_enrollment_token_is_unauthorized(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """A token that was never issued is 401 problem+json (expiry is tested with a fixed clock)."""
    unknown = redeem(control_plane, "brge_never-issued-token")
    assert unknown.status_code == 401
    assert unknown.headers["content-type"] == "application/problem+json"


def test_sync_needs_a_known_unrevoked_credential(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """Unknown credential: 401; operator token: 401; revoked agent: 403."""
    agent = enrolled_agent(control_plane, kitchen)
    assert agent.post().status_code == 200
    body = encode_message(
        SyncRequest(heartbeat=Heartbeat(agent_version="0", sent_at=time.time(), outbox_depth=0))
    )
    for token in ("brga_unknown", control_plane.admin_token):
        response = httpx.post(
            f"{control_plane.url}/v1/agents/sync",
            content=body,
            headers={"Authorization": f"Bearer {token}", **JSON},
        )
        assert response.status_code == 401
    assert kitchen.post(f"/v1/agents/{agent.identity.agent_id}/revoke").status_code == 204
    revoked = agent.post()
    agent.close()
    assert revoked.status_code == 403
    assert revoked.json()["type"].endswith("/agent-revoked")


def test_agent_credential_cannot_use_the_operators_api(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """An agent credential on /v1/orders is 403, not a silent success."""
    agent = enrolled_agent(control_plane, kitchen)
    response = agent.http.get("/v1/orders")
    agent.close()
    assert response.status_code == 403


def test_agent_receives_a_fenced_lease_with_the_recipe(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """want_leases hands out the planned task with fencing token, steps, orders and start-by."""
    agent, order_id, lease = leased_order(control_plane, kitchen)
    renewal = LeaseRenewal(task_id=lease.task_id, fencing_token=lease.fencing_token)
    again = agent.sync(renewals=[renewal], want_leases=4)
    agent.close()
    assert lease.fencing_token == 1
    assert lease.order_ids == [order_id]
    assert [(s.index, s.equipment_kind, s.setpoint_c) for s in lease.steps] == [(0, "oven", 180)]
    assert 0 < lease.start_within_s <= 120
    assert again.leases == []


def test_started_then_done_makes_the_order_ready(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """task.started moves the order to in_prep, task.done to ready; both are acked."""
    agent, order_id, lease = leased_order(control_plane, kitchen)
    first = agent.sync(
        [started(agent, lease)], renewals=[LeaseRenewal(task_id=lease.task_id, fencing_token=1)]
    )
    in_prep = kitchen.get(f"/v1/orders/{order_id}").json()["status"]
    second = agent.sync([done(agent, lease)])
    agent.close()
    order = kitchen.get(f"/v1/orders/{order_id}").json()
    assert (first.acked_seq, first.lost_leases, in_prep) == (1, [], "in_prep")
    assert second.acked_seq == 2
    assert order["status"] == "ready"
    assert order["tasks"][0]["state"] == "done"


def test_duplicate_events_are_ignored(control_plane: ControlPlane, kitchen: httpx.Client) -> None:
    """Re-sending an acked seq changes nothing and is counted as a duplicate."""
    agent, order_id, lease = leased_order(control_plane, kitchen)
    event = started(agent, lease)
    agent.sync([event])
    again = agent.sync([event])
    agent.close()
    metrics = kitchen.get("/metrics").text
    assert again.acked_seq == 1
    assert audit_actions(kitchen, order_id).count("task.started") == 1
    assert "brigade_events_duplicate_total 1.0" in metrics


def test_gap_in_seq_asks_for_a_resend(control_plane: ControlPlane, kitchen: httpx.Client) -> None:
    """Events after a missing seq are not applied; the answer says where to resend from."""
    agent, order_id, lease = leased_order(control_plane, kitchen)
    first = started(agent, lease)
    skipped = agent.event(
        EventType.STEP_STARTED, {"task_id": lease.task_id, "fencing_token": 1, "step": 0}
    )
    finished = done(agent, lease)
    answer = agent.sync([first, finished])
    status_after_gap = kitchen.get(f"/v1/orders/{order_id}").json()["status"]
    resent = agent.sync([skipped, finished])
    agent.close()
    assert (answer.acked_seq, answer.resend_from) == (1, 2)
    assert status_after_gap == "in_prep"
    assert (resent.acked_seq, resent.resend_from) == (3, None)
    assert kitchen.get(f"/v1/orders/{order_id}").json()["status"] == "ready"


def test_stale_fencing_token_is_a_recorded_conflict(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """After a release and re-lease, the old token's start is audited as a conflict, not applied."""
    agent, order_id, lease = leased_order(control_plane, kitchen)
    release = agent.event(
        EventType.TASK_RELEASED,
        {"task_id": lease.task_id, "fencing_token": 1, "reason": "oven_down"},
    )
    released = agent.sync([release], want_leases=1)
    new_lease = released.leases[0]
    stale = agent.sync(
        [started(agent, lease)],
        renewals=[LeaseRenewal(task_id=lease.task_id, fencing_token=1)],
    )
    agent.close()
    answer = kitchen.get(f"/v1/orders/{order_id}/audit").json()
    conflicts = [r for r in answer["records"] if r["action"] == "conflict.stale_fencing_token"]
    assert new_lease.fencing_token == 2
    assert stale.acked_seq == 2
    assert stale.lost_leases == [lease.task_id]
    assert kitchen.get(f"/v1/orders/{order_id}").json()["tasks"][0]["state"] == "leased"
    assert len(conflicts) == 1
    assert conflicts[0]["details"]["current_fencing_token"] == 2


def test_events_for_another_agent_are_forbidden(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """An agent may not push events in another agent's name."""
    agent = enrolled_agent(control_plane, kitchen)
    forged = agent.event(EventType.DEVICE_STATUS, {"device_id": "oven-1", "status": "online"})
    forged = forged.model_copy(update={"agent_id": "agent-someone-else"})
    response = agent.post([forged])
    agent.close()
    assert response.status_code == 403


def test_device_status_and_alerts_are_recorded(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """device.status updates equipment health; alert.raised is applied and counted."""
    agent = enrolled_agent(control_plane, kitchen)
    online = agent.event(
        EventType.DEVICE_STATUS, {"device_id": "oven-1", "kind": "oven", "status": "online"}
    )
    alert = agent.event(
        EventType.ALERT_RAISED,
        {
            "alert_id": "a-1",
            "kind": "cold_holding",
            "severity": "critical",
            "device_id": "fridge-1",
            "message": "fridge at 9 C",
            "value": 9.0,
            "limit": 5.0,
        },
    )
    answer = agent.sync([online, alert])
    agent.close()
    equipment = kitchen.get("/v1/kitchens/k1").json()["equipment"]
    metrics = kitchen.get("/metrics").text
    assert answer.acked_seq == 2
    assert {"id": "oven-1", "kind": "oven", "station_id": None, "health": "ok"} in equipment
    assert 'brigade_events_ingested_total{type="alert.raised"} 1.0' in metrics


def test_audit_answer_says_who_where_when_and_why_late(
    start_control_plane: StartControlPlane,
) -> None:
    """The audit answer names agent, device, staff, station, times, and the late start's reason.

    The box's clock runs 1000 s ahead; the server corrects it, so the start lands moments after
    it was planned, not 1000 s later (every delay is reported: tolerance 0).
    """
    control_plane = start_control_plane(delay_tolerance_s=0, planning_mode="asap")
    with ready_kitchen(control_plane) as kitchen:
        agent, order_id, lease = leased_order(control_plane, kitchen, skew_s=1000)
        step = agent.event(
            EventType.STEP_DONE,
            {
                "task_id": lease.task_id,
                "fencing_token": 1,
                "step": 0,
                "device_id": "oven-1",
                "command_id": f"{lease.task_id}.s0.a1",
                "core_temp_c": 75.5,
                "delay_reason": "staff_late",
            },
        )
        agent.sync([started(agent, lease), step, done(agent, lease)])
        agent.close()
        answer = kitchen.get(f"/v1/orders/{order_id}/audit").json()
    assert answer["status"] == "ready"
    assert answer["who"] == {
        "agents": [agent.identity.agent_id],
        "devices": ["oven-1"],
        "staff": ["badge-7"],
    }
    assert answer["where"]["kitchens"] == ["k1"]
    assert answer["where"]["stations"] == ["grill"]
    assert all(
        answer["when"][key] for key in ("accepted_at", "leased_at", "started_at", "ready_at")
    )
    (delay,) = [d for d in answer["delays"] if d["what"].endswith("started late")]
    assert delay["reason"] == "staff_late"
    assert 0 < delay["seconds"] < 30
    step_record = next(r for r in answer["records"] if r["action"] == "task.step_done")
    assert step_record["details"]["core_temp_c"] == 75.5


def test_audit_verify_passes_then_detects_tampering(
    control_plane: ControlPlane, kitchen: httpx.Client
) -> None:
    """``brigade audit verify`` accepts the chain, then names the first edited record."""
    place_order(kitchen, order_body())
    verify = [console_script("brigade"), "audit", "verify", "--db", str(control_plane.db_path)]
    intact = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False)
    assert kitchen.get("/v1/audit/verify").json()["ok"] is True
    with sqlite3.connect(control_plane.db_path) as db:
        db.execute("DROP TRIGGER audit_no_update")  # an attacker with file access
        db.execute("UPDATE audit SET actor_id = 'someone-else' WHERE seq = 2")
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False)
    assert (intact.returncode, broken.returncode) == (0, 1)
    assert "BROKEN at record 2" in broken.stdout
