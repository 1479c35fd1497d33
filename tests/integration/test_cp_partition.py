"""Reconciliation after a partition against a real ``brigade serve`` (SPEC guarantee 4)."""

from __future__ import annotations

import subprocess

from protocol.events import EventType
from tests.fixtures_cp import StartControlPlane
from tests.harness import console_script, wait_until
from tests.integration.test_cp_api import ready_kitchen
from tests.integration.test_cp_sync import audit_actions, done, leased_order, started


def test_agent_back_from_a_partition_with_a_shuffled_outbox_reconciles_exactly(
    start_control_plane: StartControlPlane,
) -> None:
    """Events arrive out of order, duplicated and with a gap: each is applied once, the gap is
    asked for again, the end state is right, the reconnect is summarised in audit and metrics,
    and the audit chain still verifies."""
    server = start_control_plane(agent_unreachable_after_s=1, planning_mode="asap")
    with ready_kitchen(server) as client:
        agent, order_id, lease = leased_order(server, client)
        agent_id = agent.identity.agent_id
        # Offline, the kitchen cooks, raises an alert and sees its oven come online.
        outbox = [
            started(agent, lease),
            agent.event(
                EventType.STEP_DONE,
                {"task_id": lease.task_id, "fencing_token": 1, "step": 0, "core_temp_c": 76.0},
            ),
            agent.event(
                EventType.ALERT_RAISED,
                {"alert_id": "a-1", "kind": "hot_holding", "severity": "warning", "message": "m"},
            ),
            done(agent, lease),
            agent.event(
                EventType.DEVICE_STATUS, {"device_id": "oven-1", "kind": "oven", "status": "online"}
            ),
        ]
        wait_until(
            lambda: not client.get(f"/v1/agents/{agent_id}").json()["reachable"],
            timeout=15,
            what="agent unreachable",
        )
        s1, s2, s3, s4, s5 = outbox
        first = agent.sync([s3, s1, s1, s2, s5])  # shuffled, s1 twice, s4 missing
        status_after_gap = client.get(f"/v1/orders/{order_id}").json()["status"]
        second = agent.sync([s2, s4, s5])  # from resend_from, with one already acked
        agent.close()
        order = client.get(f"/v1/orders/{order_id}").json()
        # The agent's own alert; the control loop may add its own (e.g. ``sla_at_risk``).
        alerts = client.get("/v1/alerts", params={"kind": "hot_holding"}).json()["alerts"]
        equipment = client.get("/v1/kitchens/k1/equipment").json()["equipment"]
        (summary,) = client.get("/v1/audit", params={"action": "agent.reconnected"}).json()[
            "records"
        ]
        listed = client.get(f"/v1/agents/{agent_id}").json()
        metrics = client.get("/metrics").text
        actions = audit_actions(client, order_id)
    verify = [console_script("brigade"), "audit", "verify", "--db", str(server.db_path)]
    verified = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False)
    assert (first.acked_seq, first.resend_from) == (3, 4)
    assert status_after_gap == "in_prep"
    assert (second.acked_seq, second.resend_from) == (5, None)
    assert order["status"] == "ready"
    assert [a["alert_id"] for a in alerts] == ["a-1"]
    assert [(e["id"], e["health"]) for e in equipment] == [("oven-1", "ok")]
    assert actions.count("task.started") == 1
    assert actions.count("task.done") == 1
    details = summary["details"]
    assert (details["events_applied"], details["duplicates_ignored"]) == (5, 2)
    assert (details["resend_requests"], details["conflicts"], details["syncs"]) == (1, 0, 2)
    assert details["offline_s"] >= 1
    assert listed["reconnect"]["finished_at"] is not None
    assert "brigade_agent_reconnects_total 1.0" in metrics
    assert 'brigade_reconnect_events_total{result="duplicate"} 2.0' in metrics
    assert verified.returncode == 0, verified.stdout
