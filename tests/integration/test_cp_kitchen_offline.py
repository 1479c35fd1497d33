"""A kitchen goes offline mid-run against a real ``brigade serve`` and its control loop: its
unleased work moves, its leased work is flagged and stays, intake sheds as the backpressure
signals say, and nothing is duplicated (SPEC guarantee 3)."""

from __future__ import annotations

from typing import Any

import httpx

from protocol.sync_api import EnrollResponse
from tests.fixtures_cp import StartControlPlane
from tests.harness import ControlPlane, wait_until
from tests.integration.test_cp_api import order_body, place_order, setup_kitchen, setup_sku
from tests.integration.test_cp_sync import ScriptedAgent, enrollment_token, redeem

UNREACHABLE_S = 3


def agent_of(server: ControlPlane, client: httpx.Client, kitchen_id: str) -> ScriptedAgent:
    response = redeem(server, enrollment_token(client, kitchen_id))
    assert response.status_code == 201, response.text
    return ScriptedAgent(server, EnrollResponse.model_validate_json(response.content))


def audit_records(client: httpx.Client, action: str) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params={"action": action, "limit": 500})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


def scope(client: httpx.Client, name: str) -> dict[str, Any]:
    scopes = client.get("/v1/backpressure").json()["scopes"]
    found: dict[str, Any] = next(s for s in scopes if s["scope"] == name)
    return found


def set_status(client: httpx.Client, kitchen_id: str, status: str) -> None:
    response = client.put(f"/v1/kitchens/{kitchen_id}/status", json={"status": status})
    assert response.status_code == 200, response.text


def test_offline_kitchen_unleased_work_moves_leased_work_is_flagged_and_intake_sheds(
    start_control_plane: StartControlPlane,
) -> None:
    """Kitchen ka's agent leases the nine tasks due soon, then goes silent: the two it never
    leased move to kb (audited ``task.replanned``), the nine leased stay on ka flagged
    ``task.stranded``; the fleet left (kb) cannot absorb ka's work, so ka pauses, the fleet
    sheds, new orders get ``429`` with ``Retry-After`` and ``GET /v1/backpressure`` says why;
    every order line is served by exactly one non-cancelled task."""
    server = start_control_plane(
        agent_unreachable_after_s=UNREACHABLE_S,
        control_interval_s=0.2,
        backpressure_horizon_s=1500,
        backpressure_min_dwell_s=0.5,
    )
    with server.client() as client:
        setup_kitchen(client, "ka", slots=10)
        setup_kitchen(client, "kb", slots=2)
        setup_sku(client, duration_s=600)
        set_status(client, "kb", "paused")  # so that every order goes to ka
        # Due soon: planned to start within the lease horizon. Due later: not leasable yet.
        soon = [
            place_order(client, order_body(promised_in_s=1500, transport_min=5)) for _ in range(9)
        ]
        later = [
            place_order(client, order_body(promised_in_s=3000, transport_min=5)) for _ in range(2)
        ]
        assert [r.status_code for r in soon + later] == [201] * 11, [r.text for r in soon + later]
        orders = [r.json() for r in soon + later]
        assert {o["kitchen_id"] for o in orders} == {"ka"}
        agent = agent_of(server, client, "ka")
        leases = agent.sync(want_leases=10).leases
        agent.close()  # ka's agent goes silent from here on
        set_status(client, "kb", "active")

        wait_until(
            lambda: (
                len(audit_records(client, "task.replanned")) == 2
                and len(audit_records(client, "task.stranded")) == 9
            ),
            timeout=30,
            what="ka's unleased work moved and its leased work flagged",
        )
        wait_until(
            lambda: (
                scope(client, "*")["level"] == "shed" and scope(client, "ka")["level"] == "pause"
            ),
            timeout=30,
            what="the fleet shedding and ka paused",
        )
        refused = place_order(client, order_body(promised_in_s=3600, transport_min=5))
        fleet, ka = scope(client, "*"), scope(client, "ka")
        replanned = audit_records(client, "task.replanned")
        stranded = audit_records(client, "task.stranded")
        level_changes = audit_records(client, "backpressure.level_changed")
        after = [client.get(f"/v1/orders/{o['id']}").json() for o in orders]
        metrics = client.get("/metrics").text

    leased_ids = {lease.task_id for lease in leases}
    soon_ids = {t["id"] for o in orders[:9] for t in o["tasks"]}
    assert leased_ids == soon_ids
    # Moved: exactly the tasks never leased, to kb, with the reason.
    later_ids = {t["id"] for o in orders[9:] for t in o["tasks"]}
    assert {r["subject"]["id"] for r in replanned} == later_ids
    assert {(r["reason"], r["details"]["to_kitchen_id"]) for r in replanned} == {
        ("kitchen_unreachable", "kb")
    }
    # Flagged, not moved: the leased tasks stay on ka under the same lease.
    assert {r["subject"]["id"] for r in stranded} == leased_ids
    tasks = {t["id"]: t for o in after for t in o["tasks"]}
    for lease in leases:
        task = tasks[lease.task_id]
        assert (task["kitchen_id"], task["state"]) == ("ka", "leased")
        assert task["fencing_token"] == lease.fencing_token
        assert task["stranded"] is True
    for task_id in later_ids:
        assert (tasks[task_id]["kitchen_id"], tasks[task_id]["state"]) == ("kb", "planned")
    # Nothing duplicated: one live task per order line.
    for order in after:
        live = [t for t in order["tasks"] if t["state"] != "cancelled"]
        assert len(live) == len(order["items"]) == 1, order
    # Intake refuses as the fleet's level says, and operators can see why.
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["reason"] == f"backpressure_{fleet['level']}"
    assert "of capacity" in fleet["why"] and fleet["since"] is not None
    assert "of capacity" in ka["why"] and not ka["actions"]["accept_new_work"]
    assert {"ka", "*"} <= {r["subject"]["id"] for r in level_changes}
    assert 'brigade_tasks_replanned_total{reason="kitchen_unreachable"} 2.0' in metrics
    assert 'brigade_backpressure_level{scope="ka"} 3.0' in metrics
