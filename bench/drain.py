"""``drain``: a backlog of 100,000 outbox events (a partition's worth) delivered to and acked by
a real local control plane (``brigade serve``, SQLite ``synchronous=FULL``), through the
agent's own sync loop (:class:`edge_agent.sync.SyncCycle`, batches of 500 in seq order).

The backlog is what a kitchen records while offline: equipment going offline and online and
food-safety alerts, appended with the agent's group commit. Durability holds on both sides:
the control plane acknowledges a seq only after its batch is committed, and the agent deletes
only what was acknowledged; at the end every seq 1..N must have been acknowledged once.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.results import Result
from edge_agent.clock import SystemClock
from edge_agent.executor import EventRecord
from edge_agent.links.control_plane import ControlPlaneClient
from edge_agent.store import Store
from edge_agent.sync import SyncCycle
from simulators.services import ControlPlane

BENCHMARK = "drain"
KITCHEN = "bench-drain"


def _backlog(n: int) -> list[EventRecord]:
    events = []
    for i in range(n):
        device = f"fridge-{i % 20}"
        if i % 10 == 9:
            events.append(
                EventRecord(
                    type="alert.raised",
                    payload={
                        "alert_id": f"cold_holding_breach:{device}:air_temp:{i}",
                        "kind": "cold_holding_breach",
                        "severity": "critical",
                        "device_id": device,
                        "message": "cold holding out of the legal limit 5 °C",
                        "value": 9.0,
                        "limit": 5.0,
                    },
                )
            )
        else:
            events.append(
                EventRecord(
                    type="device.status",
                    payload={
                        "device_id": device,
                        "kind": "fridge",
                        "status": "offline" if i % 2 else "online",
                    },
                )
            )
    return events


def _enroll(cp: ControlPlane) -> tuple[str, str]:
    with cp.client() as http:
        http.post(
            "/v1/kitchens",
            json={
                "id": KITCHEN,
                "name": "Drain kitchen",
                "timezone": "UTC",
                "stations": [{"id": "hot-line", "name": "Hot line", "slots": 2}],
            },
        ).raise_for_status()
        token = http.post(
            "/v1/enrollment-tokens", json={"kitchen_id": KITCHEN, "ttl_s": 600}
        ).json()["token"]
    with ControlPlaneClient(cp.url) as client:
        identity = client.enroll(token=token, name="bench-box", agent_version="bench")
    return identity.agent_id, identity.credential


def run(*, events: int = 100_000) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="brigade-bench-drain-", dir=Path.cwd()) as tmp_name:
        tmp = Path(tmp_name)
        cp = ControlPlane(tmp / "cp").start()
        try:
            agent_id, credential = _enroll(cp)
            with Store.open(tmp / "agent.db", boot_id="bench") as store:
                backlog = _backlog(events)
                for start in range(0, events, 5000):
                    store.append_events(
                        events=backlog[start : start + 5000], occurred_at=time.time()
                    )
                client = ControlPlaneClient(cp.url, credential=credential, timeout_s=60)
                cycle = SyncCycle(
                    store=store,
                    client=client,
                    clock=SystemClock(),
                    agent_id=agent_id,
                    kitchen_id=KITCHEN,
                    max_active_tasks=0,
                )
                started = time.perf_counter()
                batches = 0
                while store.outbox_depth():
                    cycle.run_once()
                    batches += 1
                elapsed = time.perf_counter() - started
                client.close()
                last_seq, acked_seq = store.sequence()
                assert last_seq == acked_seq == events, (last_seq, acked_seq)
        finally:
            cp.stop()
    return [
        Result(
            BENCHMARK,
            f"{events:,} events delivered and acked",
            elapsed,
            "s",
            params={
                "events": events,
                "batches": batches,
                "events_per_s": round(events / elapsed),
                "control_plane": "brigade serve, SQLite synchronous=FULL",
            },
            goal="<= 10 s",
        )
    ]
