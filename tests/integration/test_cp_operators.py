"""The operators' API of a real ``brigade serve`` beyond intake: stations, equipment, recipes,
order listing and cancellation, tasks, stranded work and reassignment, alerts, agents, audit."""

from __future__ import annotations

import json

import pytest

from protocol.events import EventType
from protocol.sync_api import LeaseRenewal
from tests.fixtures_cp import StartControlPlane
from tests.harness import ControlPlane, wait_until
from tests.integration.test_cp_api import order_body, place_order, ready_kitchen, setup_sku
from tests.integration.test_cp_sync import done, enrolled_agent, leased_order, started


@pytest.fixture
def control_plane(start_control_plane: StartControlPlane) -> ControlPlane:
    """A real ``brigade serve`` placing tasks as early as possible: these tests are about
    leases and sync, so an order's task must be leasable (and due to start) at once."""
    return start_control_plane(planning_mode="asap")


def test_stations_and_equipment_have_a_full_lifecycle(control_plane: ControlPlane) -> None:
    """Stations are added, resized and removed once empty; equipment is added, moved, read and
    decommissioned; a station still holding equipment cannot be removed; each change is
    audited as the operator's."""
    with ready_kitchen(control_plane) as client:
        added = client.post("/v1/kitchens/k1/stations", json={"id": "fryer", "name": "Fryer"})
        resized = client.patch("/v1/kitchens/k1/stations/fryer", json={"slots": 3})
        oven = {"id": "fryer-1", "kind": "fryer", "station_id": "fryer"}
        assert client.post("/v1/kitchens/k1/equipment", json=oven).status_code == 201
        busy = client.delete("/v1/kitchens/k1/stations/fryer")
        moved = client.patch("/v1/kitchens/k1/equipment/fryer-1", json={"station_id": "grill"})
        read = client.get("/v1/kitchens/k1/equipment/fryer-1").json()
        removed_station = client.delete("/v1/kitchens/k1/stations/fryer")
        removed_equipment = client.delete("/v1/kitchens/k1/equipment/fryer-1")
        stations = client.get("/v1/kitchens/k1/stations").json()["stations"]
        equipment = client.get("/v1/kitchens/k1/equipment").json()["equipment"]
        trail = client.get("/v1/audit", params={"kitchen_id": "k1"}).json()["records"]
    assert [r["action"] for r in trail if r["actor_type"] == "operator"] == [
        "kitchen.created",
        "station.added",
        "station.updated",
        "equipment.added",
        "equipment.moved",
        "station.removed",
        "equipment.removed",
    ]
    assert (added.status_code, resized.json()["slots"]) == (201, 3)
    assert (busy.status_code, busy.json()["reason"]) == (409, "station_in_use")
    assert moved.status_code == 200
    assert read == {"id": "fryer-1", "kind": "fryer", "station_id": "grill", "health": "offline"}
    assert (removed_station.status_code, removed_equipment.status_code) == (204, 204)
    assert [s["id"] for s in stations] == ["grill"]
    assert equipment == []


def test_recipe_update_reaches_the_next_lease(control_plane: ControlPlane) -> None:
    """A SKU's recipe replaced with PUT is the recipe the next lease carries."""
    with ready_kitchen(control_plane) as client:
        recipe = {
            "name": "Burger v2",
            "steps": [{"name": "sear", "equipment_kind": "grill", "duration_s": 90}],
            "freshness_window_min": 20,
        }
        updated = client.put("/v1/skus/burger", json=recipe).json()
        agent, _order_id, lease = leased_order(control_plane, client)
        agent.close()
    assert (updated["name"], updated["freshness_window_min"]) == ("Burger v2", 20)
    assert [(s.name, s.duration_s) for s in lease.steps] == [("sear", 90)]


def test_orders_list_in_pages_with_filters(control_plane: ControlPlane) -> None:
    """Four orders read two at a time with the cursor (a full page may be followed by an
    empty one); filters by status and kitchen."""
    with ready_kitchen(control_plane) as client:
        placed = [place_order(client, order_body()).json()["id"] for _ in range(3)]
        rejected = place_order(client, order_body("caviar")).json()["order_id"]
        first = client.get("/v1/orders", params={"limit": 2}).json()
        second = client.get("/v1/orders", params={"limit": 2, "cursor": first["next_cursor"]})
        third = client.get("/v1/orders", params={"cursor": second.json()["next_cursor"]}).json()
        planned = client.get("/v1/orders", params={"status": "planned", "kitchen_id": "k1"})
        bad = client.get("/v1/orders", params={"status": "eaten"})
    pages = [o["id"] for o in first["orders"]] + [o["id"] for o in second.json()["orders"]]
    assert pages == [*placed, rejected]
    assert (third["orders"], third["next_cursor"]) == ([], None)
    assert [o["id"] for o in planned.json()["orders"]] == placed
    assert (bad.status_code, bad.json()["type"].endswith("/validation-error")) == (422, True)


def test_cancelled_order_withdraws_the_lease_on_the_next_sync(
    control_plane: ControlPlane,
) -> None:
    """POST /cancel cancels the order and its leased task; the holder's next sync carries a
    Cancellation for that lease; cancelling again is harmless."""
    with ready_kitchen(control_plane) as client:
        agent, order_id, lease = leased_order(control_plane, client)
        cancelled = client.post(f"/v1/orders/{order_id}/cancel", json={"reason": "no_show"})
        again = client.post(f"/v1/orders/{order_id}/cancel")
        renewal = LeaseRenewal(task_id=lease.task_id, fencing_token=lease.fencing_token)
        answer = agent.sync(renewals=[renewal])
        agent.close()
        task = client.get(f"/v1/tasks/{lease.task_id}").json()
        metrics = client.get("/metrics").text
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["reason"]) == ("cancelled", "no_show")
    assert again.json()["status"] == "cancelled"
    assert [(c.task_id, c.reason) for c in answer.cancellations] == [
        (lease.task_id, "order_cancelled")
    ]
    assert (task["state"], task["cancel_reason"]) == ("cancelled", "order_cancelled")
    assert "brigade_lease_cancellations_total 1.0" in metrics


def test_stranded_task_waits_for_an_operator_and_the_old_lease_is_fenced(
    start_control_plane: StartControlPlane,
) -> None:
    """A silent agent's started task is listed as stranded and stays put; the operator's
    reassignment fences the old lease, so its late completion is a conflict, never applied."""
    server = start_control_plane(agent_unreachable_after_s=1, planning_mode="asap")
    with ready_kitchen(server) as client:
        agent, order_id, lease = leased_order(server, client)
        agent.sync([started(agent, lease)])

        def stranded() -> list[str]:
            page = client.get("/v1/tasks", params={"stranded": "true"}).json()
            return [t["id"] for t in page["tasks"]]

        wait_until(lambda: stranded() == [lease.task_id], timeout=15, what="stranded task")
        kitchen = client.get("/v1/kitchens/k1").json()
        moved = client.post(f"/v1/tasks/{lease.task_id}/reassign", json={"reason": "k1 dark"})
        late = agent.sync([done(agent, lease)])
        agent.close()
        records = client.get(f"/v1/orders/{order_id}/audit").json()["records"]
        order = client.get(f"/v1/orders/{order_id}").json()
        metrics = client.get("/metrics").text
    reassigned = next(r for r in records if r["action"] == "task.reassigned")
    assert kitchen["reachable"] is False
    assert (moved.status_code, moved.json()["state"], moved.json()["fencing_token"]) == (
        200,
        "planned",
        2,
    )
    assert reassigned["details"]["possible_duplicate"] is True
    assert late.acked_seq == 2
    assert "conflict.duplicate_after_reassignment" in [r["action"] for r in records]
    assert order["status"] == "planned"
    assert 'brigade_sync_conflicts_total{kind="duplicate_after_reassignment"} 1.0' in metrics
    assert 'brigade_tasks_reassigned_total{possible_duplicate="true"} 1.0' in metrics


def test_alerts_are_listed_and_acknowledged_with_a_corrective_action(
    control_plane: ControlPlane,
) -> None:
    """An agent's alert is listed open, acknowledged by an operator, then listed as closed."""
    with ready_kitchen(control_plane) as client:
        agent = enrolled_agent(control_plane, client)
        raised = agent.event(
            EventType.ALERT_RAISED,
            {
                "alert_id": "a-7",
                "kind": "cold_holding",
                "severity": "critical",
                "device_id": "fridge-1",
                "message": "fridge at 9 C",
                "value": 9.0,
                "limit": 5.0,
            },
        )
        agent.sync([raised])
        agent.close()
        open_alerts = client.get("/v1/alerts", params={"acknowledged": "false"}).json()
        path = f"/v1/alerts/{agent.identity.agent_id}/a-7/acknowledge"
        acked = client.post(path, json={"corrective_action": "stock moved to fridge-2"})
        closed = client.get("/v1/alerts", params={"acknowledged": "true"}).json()
        trail = client.get("/v1/audit", params={"action": "alert.acknowledged"}).json()
    assert [(a["alert_id"], a["limit"]) for a in open_alerts["alerts"]] == [("a-7", 5.0)]
    assert acked.json()["corrective_action"] == "stock moved to fridge-2"
    assert [a["acknowledged_by"] for a in closed["alerts"]] == ["admin"]
    assert len(trail["records"]) == 1


def test_agents_are_listed_with_clock_offset_and_can_be_revoked(
    control_plane: ControlPlane,
) -> None:
    """The agent list shows reachability and the corrected clock offset; revoking shows too."""
    with ready_kitchen(control_plane) as client:
        agent = enrolled_agent(control_plane, client, skew_s=1000)
        agent.sync()
        agent.close()
        (listed,) = client.get("/v1/agents", params={"kitchen_id": "k1"}).json()["agents"]
        client.post(f"/v1/agents/{listed['id']}/revoke")
        revoked = client.get(f"/v1/agents/{listed['id']}").json()
    assert listed["reachable"] is True
    assert -1001 < listed["clock_offset_s"] < -999
    assert (revoked["revoked"], revoked["reachable"]) == (True, False)


def test_audit_listing_pages_through_the_chain(control_plane: ControlPlane) -> None:
    """GET /v1/audit pages with next_after_seq and filters by action."""
    with ready_kitchen(control_plane) as client:
        setup_sku(client, "fries")
        first = client.get("/v1/audit", params={"limit": 2}).json()
        rest = client.get("/v1/audit", params={"after_seq": first["next_after_seq"]}).json()
        created = client.get("/v1/audit", params={"action": "sku.created"}).json()
    seqs = [r["seq"] for r in first["records"] + rest["records"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [r["subject"]["id"] for r in created["records"]] == ["burger", "fries"]


def test_api_token_minted_over_http_has_its_role(control_plane: ControlPlane) -> None:
    """An admin mints a viewer token over HTTP; it reads but cannot order."""
    with ready_kitchen(control_plane) as client:
        minted = client.post("/v1/api-tokens", json={"role": "viewer", "name": "wall"}).json()
    with control_plane.client(minted["token"]) as viewer:
        assert viewer.get("/v1/orders").status_code == 200
        assert place_order(viewer, order_body()).status_code == 403


def test_logs_are_json_lines_carrying_the_request_id(control_plane: ControlPlane) -> None:
    """Each request is logged as one JSON line with its X-Request-ID, route and status, and
    timed in the per-route latency histogram."""
    with control_plane.client() as client:
        client.get("/v1/kitchens", headers={"X-Request-ID": "trace-kitchens-1"})
        metrics = client.get("/metrics").text

    def logged() -> list[dict[str, object]]:
        lines = control_plane.process.log_path.read_text().splitlines()  # type: ignore[union-attr]
        return [
            json.loads(line)
            for line in lines
            if line.startswith("{") and "trace-kitchens-1" in line
        ]

    wait_until(lambda: bool(logged()), timeout=10, what="the request's log line")
    (entry,) = logged()
    assert (entry["route"], entry["status"], entry["level"]) == ("/v1/kitchens", 200, "INFO")
    bucket = (
        'brigade_http_request_duration_seconds_bucket{le="0.5",method="GET",route="/v1/kitchens"}'
    )
    assert bucket in metrics
