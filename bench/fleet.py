"""``fleet``: how many kitchen agents one control plane (2 cores) keeps syncing on time.

Each simulated agent is a few bytes of state in one asyncio process: every ``SYNC_INTERVAL_S``
(the edge agent's default, 2 s, with a random phase), or less often when the control plane
advises it (``next_sync_s``, honoured as the edge agent does; a 429/503 defers the next sync to
its ``Retry-After``), it sends what a real agent sends: a heartbeat, renewals of the leases it
holds, ``want_leases``, and its outbox events (a routine ``readings.summary`` every sync;
``task.started`` and ``task.done`` for each lease it got). The control plane is a real
``brigade serve`` with every feature on (auth, dedupe by seq, leases, audit, group-committed
durable writes). The fleet grows in steps; a step is sustained when the p99 sync latency,
measured from when the sync was *due* (so a slow server cannot hide behind a slow client), stays
within 200 ms with no errors other than 429/503.

Agents are enrolled straight into the store before the server starts (one transaction) instead
of through ``POST /v1/agents/enroll``, which would take most of the benchmark's time.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.results import Result
from control_plane.auth import hash_secret
from control_plane.store import Store
from simulators.services import ControlPlane

BENCHMARK = "fleet"

SYNC_INTERVAL_S = 2.0
STEPS = (250, 500, 750, 1000, 1500, 2000)
P99_GOAL_MS = 200.0
CONNECTIONS = 128
ORDERS = 300

SKU = {
    "id": "fleet-bowl",
    "name": "Fleet bowl",
    "station_id": "hot-line",
    "steps": [{"name": "cook", "equipment_kind": "oven", "duration_s": 60}],
    "freshness_window_min": 60,
}


@dataclass
class Agent:
    """What one simulated agent remembers."""

    agent_id: str
    kitchen_id: str
    credential: str
    next_seq: int = 1
    acked_seq: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)
    leases: dict[str, int] = field(default_factory=dict)
    #: Seconds between syncs: the agent's own interval, or longer when the control plane
    #: advises it (``next_sync_s``), as the edge agent does.
    interval_s: float = SYNC_INTERVAL_S

    def event(self, event_type: str, payload: dict[str, Any], now: float) -> None:
        self.outbox.append(
            {
                "agent_id": self.agent_id,
                "kitchen_id": self.kitchen_id,
                "seq": self.next_seq,
                "event_id": str(uuid.uuid4()),
                "type": event_type,
                "occurred_at": now,
                "payload": payload,
            }
        )
        self.next_seq += 1

    def request(self, now: float) -> bytes:
        self.event(
            "readings.summary",
            {
                "device_id": "fridge-1",
                "metric": "temp_c",
                "window_start": now - SYNC_INTERVAL_S,
                "window_end": now,
                "count": 4,
                "min": 3.0,
                "max": 3.4,
                "mean": 3.2,
                "last": 3.1,
            },
            now,
        )
        events = [e for e in self.outbox if e["seq"] > self.acked_seq][:500]
        body = {
            "heartbeat": {"agent_version": "bench", "sent_at": now, "outbox_depth": len(events)},
            "events": events,
            "renewals": [{"task_id": t, "fencing_token": f} for t, f in self.leases.items()],
            "want_leases": 1,
        }
        return json.dumps(body).encode()

    def answer(self, body: dict[str, Any], now: float) -> None:
        self.interval_s = max(SYNC_INTERVAL_S, float(body.get("next_sync_s") or 0.0))
        self.acked_seq = max(self.acked_seq, int(body["acked_seq"]))
        self.outbox = [e for e in self.outbox if e["seq"] > self.acked_seq]
        for task_id in body.get("lost_leases", []):
            self.leases.pop(task_id, None)
        for cancellation in body.get("cancellations", []):
            self.leases.pop(cancellation["task_id"], None)
        for finished in [t for t in self.leases if self.leases[t] < 0]:
            del self.leases[finished]
        for lease in body.get("leases", []):
            task, token = lease["task_id"], lease["fencing_token"]
            self.leases[task] = token
            # Cook it at once: started and done go out with the next sync.
            self.event("task.started", {"task_id": task, "fencing_token": token,
                                        "station_id": lease["station_id"]}, now)  # fmt: skip
            self.event("task.done", {"task_id": task, "fencing_token": token, "quantity": 1}, now)


@dataclass
class Step:
    """What one fleet size measured."""

    agents: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    duration_s: float = 0.0
    #: The sync interval each answered sync left its agent with (advised by the server).
    intervals_s: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def errors(self) -> int:
        refused = sum(n for s, n in self.statuses.items() if s not in (200, 429, 503))
        return refused + self.transport_errors

    @property
    def sustained(self) -> bool:
        return self.errors == 0 and self.p(0.99) <= P99_GOAL_MS


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float, bytes]:
    """Status, ``Retry-After`` seconds (0 when absent) and body of one HTTP/1.1 answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, retry_after = 0, 0.0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
        elif line[:12].lower() == b"retry-after:" and line[12:].strip().isdigit():
            retry_after = float(line[12:])
    return status, retry_after, (await reader.readexactly(length)) if length else b""


async def _run_step(host: str, port: int, agents: list[Agent], seconds: float) -> Step:
    step = Step(len(agents))
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(min(CONNECTIONS, len(agents))):
        pool.put_nowait(await asyncio.open_connection(host, port))
    started = time.monotonic()
    deadline = started + seconds
    rng = random.Random(len(agents))
    # A step measures N agents in their steady state, each at a random phase of its cadence:
    # those that synced in an earlier step keep the interval they were advised, the new ones
    # take the fleet's current one (as if they had been running), not a burst in the first 2 s.
    fleet_interval_s = max(agent.interval_s for agent in agents)

    async def one_agent(agent: Agent) -> None:
        due = started + rng.uniform(0, agent.interval_s if agent.acked_seq else fleet_interval_s)
        while due < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            body = agent.request(time.time())
            head = (
                f"POST /v1/agents/sync HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {agent.credential}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            reader, writer = await pool.get()
            try:
                writer.write(head + body)
                status, retry_after, content = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                step.transport_errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            else:
                step.statuses[status] += 1
                if status == 200:
                    step.latencies_s.append(time.monotonic() - due)
                    agent.answer(json.loads(content), time.time())
                    step.intervals_s.append(agent.interval_s)
                elif status in (429, 503):
                    # Honoured as the edge agent does: not again before Retry-After, jittered.
                    due += max(0.0, retry_after - agent.interval_s) * rng.uniform(1.0, 1.5)
            finally:
                pool.put_nowait((reader, writer))
            due += agent.interval_s

    await asyncio.gather(*(one_agent(agent) for agent in agents))
    step.duration_s = time.monotonic() - started
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return step


def _seed(db_path: Path, count: int) -> list[Agent]:
    """Kitchens with one agent each, written straight into the store (one transaction)."""
    store = Store.open(db_path)
    agents = []
    now = time.time()
    try:
        with store.write() as tx:
            for n in range(count):
                kitchen_id, agent_id = f"fk{n:05d}", f"agent-fleet-{n:05d}"
                credential = f"brga_fleet_{uuid.uuid4().hex}"
                tx.insert_kitchen(
                    kitchen_id=kitchen_id,
                    name=kitchen_id,
                    timezone="UTC",
                    location=None,
                    status="active",
                    created_at=now,
                )
                tx.insert_station(
                    kitchen_id=kitchen_id, station_id="hot-line", name="Hot line", slots=4
                )
                tx.insert_agent(
                    agent_id=agent_id,
                    kitchen_id=kitchen_id,
                    name=agent_id,
                    credential_hash=hash_secret(credential),
                    agent_version="bench",
                    enrolled_at=now,
                )
                agents.append(Agent(agent_id, kitchen_id, credential))
    finally:
        store.close()
    return agents


def run(*, seconds: float = 12.0, steps: tuple[int, ...] = STEPS) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="brigade-bench-fleet-") as tmp:
        cp = ControlPlane(Path(tmp))
        agents = _seed(cp.db_path, max(steps))
        cp.start()
        try:
            promised = (datetime.now(UTC) + timedelta(hours=20)).isoformat()
            with cp.client(timeout=60) as http:
                http.post("/v1/skus", json=SKU).raise_for_status()
                order = {
                    "items": [{"sku_id": SKU["id"], "quantity": 1}],
                    "promised_by": promised,
                    "destination": "store-1",
                }
                for n in range(ORDERS):
                    http.post("/v1/orders", json=order, headers={"Idempotency-Key": f"f-{n}"})
            sustained = 0
            for size in steps:
                step = asyncio.run(_run_step(cp.host, cp.port, agents[:size], seconds))
                params = {
                    "agents": size,
                    "sync_interval_s": SYNC_INTERVAL_S,
                    "seconds": seconds,
                    "syncs": len(step.latencies_s),
                    "syncs_per_s": round(len(step.latencies_s) / step.duration_s, 1),
                    "p50_ms": round(step.p(0.5), 2),
                    "statuses": {str(k): v for k, v in sorted(step.statuses.items())},
                    "transport_errors": step.transport_errors,
                    "advised_interval_s_max": round(max(step.intervals_s, default=0.0), 2),
                }
                results.append(
                    Result(
                        "fleet",
                        f"p99_sync_latency@{size}",
                        round(step.p(0.99), 2),
                        "ms",
                        params=params,
                        goal=f"<= {P99_GOAL_MS:g} ms",
                    )
                )
                if not step.sustained:
                    break
                sustained = size
            results.append(
                Result(
                    "fleet",
                    "agents_sustained",
                    sustained,
                    "agents",
                    params={"steps": list(steps), "p99_goal_ms": P99_GOAL_MS},
                    goal=">= 2000 agents",
                )
            )
        finally:
            cp.stop()
    return results
