"""``outbox``: durable appends/s and append+ack/s of the agent's SQLite outbox, against
persist-queue's ``SQLiteAckQueue`` with its defaults (WAL, ``synchronous=FULL``: every ``put``
and every ``ack`` is its own fsync'd commit), measured in the same run in the same directory.

Durability holds on both sides: the outbox runs ``synchronous=FULL`` (checked before the run)
and a batch is acknowledged only after its one transaction committed (group commit, SPEC
guarantee 10); after the run the store is reopened and every appended seq must be there.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.results import Result
from edge_agent.executor import EventRecord
from edge_agent.store import Store

BENCHMARK = "outbox"
GOAL = "ratio >= 30"


def _event(n: int) -> EventRecord:
    return EventRecord(
        type="task.step_done",
        payload={"task_id": f"t-{n}", "fencing_token": 1, "step": 0, "core_temp_c": 75.5},
    )


def _persist_queue(directory: Path, n: int) -> tuple[float, float]:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(str(directory / "persist-queue"))
    started = time.perf_counter()
    for i in range(n):
        queue.put(_event(i).payload)
    put_rate = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(n):
        queue.put(_event(i).payload)
        queue.ack(queue.get())
    cycle_rate = n / (time.perf_counter() - started)
    return put_rate, cycle_rate


def _outbox(directory: Path, n: int, batch: int) -> tuple[float, float, float]:
    path = directory / "agent.db"
    with Store.open(path, boot_id="bench") as store:
        synchronous = store._db.conn.execute("PRAGMA synchronous").fetchone()[0]
        assert synchronous == 2, "the outbox must run synchronous=FULL"
        events = [_event(i) for i in range(batch)]
        started = time.perf_counter()
        for _ in range(n // batch):
            store.append_events(events=events, occurred_at=time.time())
        batched = n // batch * batch / (time.perf_counter() - started)
        singles = max(200, n // 200)
        started = time.perf_counter()
        for i in range(singles):
            store.append_event(type="task.started", payload=_event(i).payload, occurred_at=1.0)
        single_rate = singles / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(n // batch):
            seqs = store.append_events(events=events, occurred_at=time.time())
            store.ack_events(up_to_seq=seqs[-1])
        cycle = n // batch * batch / (time.perf_counter() - started)
        last_seq, _ = store.sequence()
    with Store.open(path, boot_id="bench") as reopened:
        assert reopened.sequence()[0] == last_seq, "an appended seq did not survive a reopen"
    return batched, single_rate, cycle


def run(*, baseline_n: int = 1500, n: int = 200_000, batch: int = 1000) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="brigade-bench-outbox-", dir=Path.cwd()) as tmp:
        directory = Path(tmp)
        put_rate, pq_cycle = _persist_queue(directory, baseline_n)
        batched, single, cycle = _outbox(directory, n, batch)
    params = {"events": n, "batch": batch, "synchronous": "FULL", "baseline_items": baseline_n}
    baseline = "persist-queue SQLiteAckQueue put"
    return [
        Result(
            BENCHMARK,
            "durable appends/s (group commit)",
            batched,
            "events/s",
            baseline=baseline,
            baseline_value=put_rate,
            params=params,
            goal=GOAL,
        ),
        Result(
            BENCHMARK,
            "append+ack/s (group commit)",
            cycle,
            "events/s",
            baseline="persist-queue put+get+ack",
            baseline_value=pq_cycle,
            params=params,
            goal=GOAL,
        ),
        Result(
            BENCHMARK,
            "durable appends/s (one per commit)",
            single,
            "events/s",
            baseline=baseline,
            baseline_value=put_rate,
            params=params | {"batch": 1},
            goal="for reference: one fsync each",
        ),
    ]
