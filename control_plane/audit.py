"""The audit trail: an append-only, hash-chained log, and the per-order audit answer.

Each record's ``hash`` is ``sha256(prev_hash + canonical_json(record))`` where the record is every
column except ``hash`` itself; the first record's ``prev_hash`` is :data:`GENESIS_HASH`. Changing,
removing or reordering any record breaks every later link, which :func:`verify` reports.

>>> record_hash(GENESIS_HASH, {"seq": 1, "action": "order.accepted"})[:12]
'ced05cb2ec0f'
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from control_plane.queries import Reader
from control_plane.store import Writer

GENESIS_HASH = "0" * 64

#: Columns covered by the hash, in the order they are stored.
HASHED_FIELDS = (
    "seq",
    "at",
    "actor_type",
    "actor_id",
    "action",
    "subject_type",
    "subject_id",
    "order_id",
    "kitchen_id",
    "station_id",
    "device_id",
    "reason",
    "details",
)


#: Built once: ``json.dumps`` with these options builds a new encoder on every call, a third of
#: its cost for a small record (and a sync applying a catch-up batch encodes thousands).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the same value always gives the same text."""
    return _CANONICAL.encode(value)


def record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """The chain hash of one record given its predecessor's hash."""
    return hashlib.sha256((prev_hash + canonical_json(dict(record))).encode()).hexdigest()


def append(
    tx: Writer,
    *,
    at: float,
    actor_type: str,
    actor_id: str,
    action: str,
    subject_type: str,
    subject_id: str,
    order_id: str | None = None,
    kitchen_id: str | None = None,
    station_id: str | None = None,
    device_id: str | None = None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append one record inside ``tx``; returns its ``seq`` (a :class:`Batch` of one, so the
    chain is built in one place)."""
    batch = Batch(tx)
    seq = batch.append(
        at=at,
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        order_id=order_id,
        kitchen_id=kitchen_id,
        station_id=station_id,
        device_id=device_id,
        reason=reason,
        details=details,
    )
    batch.flush()
    return seq


class Batch:
    """Many records appended by one unit of work, written with one statement by :meth:`flush`.

    The same chain as :func:`append` record by record (same seqs, same hashes), for a unit of
    work that appends hundreds (a sync applying a catch-up batch of agent events): the chain's
    head is read once, each record's canonical JSON is built once, and the rows are inserted
    with one ``executemany``. Nothing else may append to the chain between the first
    :meth:`append` and :meth:`flush`.

    >>> batch = Batch(tx)                                  # doctest: +SKIP
    >>> batch.append(at=now, actor_type="agent", ...)      # doctest: +SKIP
    >>> batch.flush()                                      # doctest: +SKIP
    """

    def __init__(self, tx: Writer) -> None:
        self._tx = tx
        self._head: tuple[int, str] | None = None
        self._rows: list[tuple[object, ...]] = []

    def append(
        self,
        *,
        at: float,
        actor_type: str,
        actor_id: str,
        action: str,
        subject_type: str,
        subject_id: str,
        order_id: str | None = None,
        kitchen_id: str | None = None,
        station_id: str | None = None,
        device_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Queue one record (see :func:`append`); returns its ``seq``."""
        if self._head is None:
            last = self._tx.last_audit()
            self._head = (0, GENESIS_HASH) if last is None else (int(last["seq"]), last["hash"])
        last_seq, prev_hash = self._head
        seq = last_seq + 1
        details_json = canonical_json(dict(details or {}))
        # The record's canonical JSON with the details spliced in, instead of encoding them a
        # second time: keys are sorted, so the first '"details":null' is the key itself (a
        # string value containing it would have its quotes escaped).
        shell = canonical_json(
            {
                "seq": seq,
                "at": at,
                "actor_type": actor_type,
                "actor_id": actor_id,
                "action": action,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "order_id": order_id,
                "kitchen_id": kitchen_id,
                "station_id": station_id,
                "device_id": device_id,
                "reason": reason,
                "details": None,
            }
        )
        text = shell.replace('"details":null', '"details":' + details_json, 1)
        record_hash_ = hashlib.sha256((prev_hash + text).encode()).hexdigest()
        self._rows.append(
            (
                seq,
                at,
                actor_type,
                actor_id,
                action,
                subject_type,
                subject_id,
                order_id,
                kitchen_id,
                station_id,
                device_id,
                reason,
                details_json,
                prev_hash,
                record_hash_,
            )
        )
        self._head = (seq, record_hash_)
        return seq

    def flush(self) -> None:
        """Write the queued records; later appends (by anyone) continue the chain."""
        if self._rows:
            self._tx.insert_audit_rows(rows=self._rows)
        self._rows = []
        self._head = None


def _row_record(row: sqlite3.Row) -> dict[str, Any]:
    record = {name: row[name] for name in HASHED_FIELDS if name != "details"}
    record["details"] = json.loads(row["details_json"])
    return record


@dataclass(frozen=True)
class BrokenLink:
    """The first record whose chain does not verify, and why."""

    seq: int
    problem: str


@dataclass(frozen=True)
class Verification:
    """Result of :func:`verify`: how many records were checked and the first break, if any."""

    records: int
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_rows(rows: Iterable[sqlite3.Row]) -> Verification:
    """Check the chain over ``rows`` (all of them, in ``seq`` order)."""
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    for row in rows:
        count += 1
        seq = int(row["seq"])
        if seq != expected_seq:
            return Verification(count, BrokenLink(seq, f"expected seq {expected_seq}, found {seq}"))
        if row["prev_hash"] != prev_hash:
            return Verification(
                count, BrokenLink(seq, "prev_hash does not match the record before")
            )
        if record_hash(prev_hash, _row_record(row)) != row["hash"]:
            return Verification(count, BrokenLink(seq, "hash does not match the record's content"))
        prev_hash, expected_seq = str(row["hash"]), seq + 1
    return Verification(count, None)


def _paged(reader: Reader, page: int) -> Iterator[sqlite3.Row]:
    after = 0
    while rows := reader.audit_rows(after_seq=after, limit=page):
        yield from rows
        after = int(rows[-1]["seq"])


def verify(reader: Reader, *, page: int = 5000) -> Verification:
    """Verify the whole chain, page by page; returns the first broken link if any."""
    return verify_rows(_paged(reader, page))


def iso(ts: float | None) -> str | None:
    """Unix seconds as an ISO-8601 UTC datetime (the operators' API format)."""
    # Fixed precision, so the strings of one answer also sort in time order.
    return (
        None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
    )


def record_view(row: sqlite3.Row) -> dict[str, Any]:
    """One audit record as the API shows it."""
    return {
        "seq": row["seq"],
        "at": iso(row["at"]),
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "action": row["action"],
        "subject": {"type": row["subject_type"], "id": row["subject_id"]},
        "order_id": row["order_id"],
        "kitchen_id": row["kitchen_id"],
        "station_id": row["station_id"],
        "device_id": row["device_id"],
        "reason": row["reason"],
        "details": json.loads(row["details_json"]),
        "hash": row["hash"],
        "prev_hash": row["prev_hash"],
    }


def task_delays(
    tasks: Iterable[Mapping[str, Any]],
    delay_reasons: Mapping[str, str],
    *,
    now: float,
    tolerance_s: float,
) -> list[dict[str, Any]]:
    """Why an order was (or is running) late, task by task, as of ``now``.

    Reported when beyond ``tolerance_s``: a start after ``start_after``; a finish after
    ``finish_by``; a lease whose ``start_by`` passed with no start reported; a task still open
    after its ``finish_by``. ``delay_reasons`` maps a task id to a reason the kitchen reported
    (a step's ``delay_reason``), which wins over the inferred one.
    """
    delays: list[dict[str, Any]] = []
    for task in tasks:
        task_id = str(task["id"])
        state = task["state"]
        start_by = task.get("start_by")
        if state == "leased" and start_by is not None and now - start_by > tolerance_s:
            delays.append(
                {
                    "what": f"task {task_id} leased but not started by its start_by",
                    "reason": delay_reasons.get(task_id, "start_by_missed"),
                    "seconds": round(now - start_by, 3),
                }
            )
        if state in ("planned", "leased", "started") and now - task["finish_by"] > tolerance_s:
            delays.append(
                {
                    "what": f"task {task_id} still open after its finish_by",
                    "reason": delay_reasons.get(task_id, "overdue"),
                    "seconds": round(now - task["finish_by"], 3),
                }
            )
        started, leased = task["started_at"], task["leased_at"]
        if started is not None and started - task["start_after"] > tolerance_s:
            waited_for_lease = (leased or started) - task["start_after"]
            inferred = (
                "awaiting_lease"
                if waited_for_lease >= started - (leased or started)
                else "slow_start_after_lease"
            )
            delays.append(
                {
                    "what": f"task {task_id} started late",
                    "reason": delay_reasons.get(task_id, inferred),
                    "seconds": round(started - task["start_after"], 3),
                }
            )
        finished = task["finished_at"]
        if state == "done" and finished is not None:
            late = finished - task["finish_by"]
            if late > tolerance_s:
                delays.append(
                    {
                        "what": f"task {task_id} finished after its finish_by",
                        "reason": delay_reasons.get(task_id, "finished_after_finish_by"),
                        "seconds": round(late, 3),
                    }
                )
    return delays


_WHEN_ACTIONS = {
    "accepted_at": "order.accepted",
    "planned_at": "task.planned",
    "leased_at": "task.leased",
    "started_at": "task.started",
    "ready_at": "order.ready",
}


def order_answer(
    reader: Reader, order: sqlite3.Row, *, now: float, tolerance_s: float
) -> dict[str, Any]:
    """Who made this order, where, when, and why it was late, in one answer."""
    rows = reader.audit_of_order(str(order["id"]))
    agents: list[str] = []
    devices: list[str] = []
    staff: list[str] = []
    kitchens: list[str] = []
    stations: list[str] = []
    delay_reasons: dict[str, str] = {}

    def add(bucket: list[str], value: Any) -> None:
        if value is not None and str(value) not in bucket:
            bucket.append(str(value))

    for row in rows:
        details = json.loads(row["details_json"])
        if row["actor_type"] == "agent":
            add(agents, row["actor_id"])
        add(devices, row["device_id"])
        add(staff, details.get("staff_badge"))
        add(kitchens, row["kitchen_id"])
        add(stations, row["station_id"])
        if details.get("delay_reason") and row["subject_type"] == "task":
            delay_reasons[str(row["subject_id"])] = str(details["delay_reason"])
    when = {
        key: iso(next((r["at"] for r in rows if r["action"] == action), None))
        for key, action in _WHEN_ACTIONS.items()
    }
    tasks = reader.tasks_of_order(str(order["id"]))
    return {
        "order_id": order["id"],
        "status": order["status"],
        "who": {"agents": agents, "devices": devices, "staff": staff},
        "where": {"kitchens": kitchens, "stations": stations, "equipment": list(devices)},
        "when": when,
        "delays": task_delays(
            [dict(t) for t in tasks], delay_reasons, now=now, tolerance_s=tolerance_s
        ),
        "records": [record_view(row) for row in rows],
    }
