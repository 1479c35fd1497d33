"""An operator's order cooked end to end: control plane, agent, oven, real Mosquitto."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol import Channel
from simulators.broker import Broker
from simulators.demo_menu import SKUS, demo_plant
from simulators.devices import SimulatedDevice
from simulators.processes import ManagedProcess, leftover_processes, wait_until
from simulators.services import ControlPlane, console_script, run_cli
from tests.observer import observe

KITCHEN = "k1"
ROAST = next(s for s in SKUS if s["id"] == "roast-chicken")


def setup_kitchen(http: httpx.Client) -> None:
    for response in (
        http.post(
            "/v1/kitchens",
            json={
                "id": KITCHEN,
                "name": "Central kitchen",
                "timezone": "UTC",
                "stations": [{"id": "hot-line", "name": "Hot line", "slots": 2}],
            },
        ),
        http.post(
            f"/v1/kitchens/{KITCHEN}/equipment",
            json={"id": "oven-1", "kind": "oven", "station_id": "hot-line"},
        ),
        http.post("/v1/skus", json=ROAST),
    ):
        assert response.status_code == 201, response.text


@pytest.fixture
def kitchen_agent(
    tmp_path: Path, broker: Broker, control_plane: ControlPlane
) -> Iterator[tuple[ManagedProcess, str]]:
    """An enrolled ``brigade-agent run`` for kitchen k1 and an oven on the kitchen's broker."""
    with control_plane.client() as http:
        setup_kitchen(http)
        token = http.post(
            "/v1/enrollment-tokens", json={"kitchen_id": KITCHEN, "ttl_s": 300}
        ).json()["token"]
    config = tmp_path / "agent" / "agent.json"
    run_cli(
        "brigade-agent",
        "enroll",
        "--url",
        control_plane.url,
        "--token",
        token,
        "--name",
        "box-1",
        "--config",
        str(config),
    )
    assert config.stat().st_mode & 0o077 == 0, "the credential file must be private (0600)"
    oven = SimulatedDevice(
        kind="oven",
        kitchen_id=KITCHEN,
        device_id="oven-1",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        time_scale=1.0,
        plant=demo_plant("oven"),
    )
    oven.start()
    agent = ManagedProcess(
        "agent",
        [
            console_script("brigade-agent"),
            "run",
            "--config",
            str(config),
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
        yield agent, str(config)
    finally:
        agent.stop()
        oven.stop()


def order_body(slack_s: float = 10) -> dict[str, Any]:
    """Promised ``slack_s`` after transport plus cooking allow: planned just in time, the task
    starts a few seconds from now."""
    promised_in = timedelta(minutes=5, seconds=slack_s)
    return {
        "items": [{"sku_id": ROAST["id"], "quantity": 2}],
        "promised_by": (datetime.now(UTC) + promised_in).isoformat(),
        "destination": "store-7",
        "transport_min": 5,
        "priority": "normal",
    }


def test_order_is_cooked_end_to_end_and_the_audit_answers_who_where_when(
    kitchen_agent: tuple[ManagedProcess, str], broker: Broker, control_plane: ControlPlane
) -> None:
    """An order becomes a task, the agent cooks it on the oven over MQTT, and the order is ready
    with an audit trail naming the agent, the oven, the kitchen, the station and every step."""
    agent, _config = kitchen_agent
    with observe(broker.host, broker.port, KITCHEN) as bus, control_plane.client() as http:

        def oven_ok() -> bool:
            equipment = http.get(f"/v1/kitchens/{KITCHEN}/equipment").json()["equipment"]
            return any(e["id"] == "oven-1" and e["health"] == "ok" for e in equipment)

        # Registered equipment gives capacity once its device has reported in.
        wait_until(oven_ok, timeout=30, interval=0.2, what="oven reported")
        created = http.post("/v1/orders", json=order_body(), headers={"Idempotency-Key": "o-1"})
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["kitchen_id"] == KITCHEN
        assert order["predicted_ready_at"]

        def ready() -> bool:
            assert agent.running(), agent.log_tail()
            return bool(http.get(f"/v1/orders/{order['id']}").json()["status"] == "ready")

        wait_until(ready, timeout=45, interval=0.2, what="order ready")

        audit = http.get(f"/v1/orders/{order['id']}/audit").json()
        task_ids = [t["id"] for t in http.get(f"/v1/orders/{order['id']}").json()["tasks"]]

    agents = audit["who"]["agents"]
    assert len(agents) == 1
    assert audit["who"]["devices"] == ["oven-1"]
    assert audit["where"]["kitchens"] == [KITCHEN]
    assert audit["where"]["stations"] == ["hot-line"]
    assert audit["where"]["equipment"] == ["oven-1"]
    when = audit["when"]
    stamps = [when[k] for k in ("accepted_at", "leased_at", "started_at", "ready_at")]
    assert all(stamps), when
    assert stamps == sorted(stamps), "accepted <= leased <= started <= ready"
    actions = [r["action"] for r in audit["records"]]
    for expected in ("order.accepted", "task.started", "task.done"):
        assert any(a.startswith(expected) for a in actions), actions
    assert any(r.get("device_id") == "oven-1" for r in audit["records"])

    # Evidence from outside the components: one command id per step, acked accepted then done.
    for task_id in task_ids:
        commands = bus.commands_for(task_id)
        assert commands, f"no command seen for {task_id}"
        per_step: dict[int, set[str]] = {}
        for command in commands:
            per_step.setdefault(command["step"], set()).add(command["command_id"])
        assert all(len(ids) == 1 for ids in per_step.values()), per_step
        acks = [
            m.payload["result"]
            for m in bus.of(Channel.ACK)
            if m.payload.get("command_id") in set().union(*per_step.values())
        ]
        assert "accepted" in acks and "done" in acks

    verify = subprocess.run(
        [console_script("brigade"), "audit", "verify", "--db", str(control_plane.db_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_demo_ends_by_itself_with_ready_orders_and_leaves_no_process(tmp_path: Path) -> None:
    """`brigade-sim demo --duration` cooks orders in every kitchen, reports no errors, and
    leaves no process behind."""
    workdir = tmp_path / "demo"
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [
            console_script("brigade-sim"),
            "demo",
            "--duration",
            "20",
            "--kitchens",
            "2",
            "--report",
            str(report_path),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    for key in (
        "orders_submitted",
        "orders_accepted",
        "orders_rejected",
        "orders_ready",
        "tasks_done",
        "errors",
    ):
        assert key in report
    assert report["errors"] == 0, report
    assert report["orders_ready"] > 0, report
    assert set(report["per_kitchen"]) == {"k1", "k2"}
    leftovers = leftover_processes(workdir)
    assert not leftovers, f"processes left behind: {leftovers}"
