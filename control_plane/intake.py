"""Order intake with ``Idempotency-Key`` semantics (SPEC guarantees 1 and 2).

1. A key is *in flight* while its first request runs; this process keeps that set in memory
   (:class:`KeysInFlight`), so a concurrent request with the same key gets ``409`` at once.
2. The order, its items, its prep tasks, their audit records **and the stored answer under the
   key** are written in one transaction: after a crash either all of it exists (a retry replays
   the answer byte for byte) or none of it does (the retry does the work). Nothing about an
   unfinished request survives a crash, so there is no stale claim to expire.
3. A retry with the same key and the same canonical body gets the stored status and body; a
   different body gets ``422``. Keys are kept ``idempotency_retention_s`` (at least 24 h).
4. Keys are scoped to the operator (the API token's name), as payment APIs scope them to an
   account: another operator's request with an equal key is a request of its own, never a
   replay of, or a conflict with, this one. Tokens of one operator (rotated, say) share keys.

Across several control-plane processes on one store the primary key of ``idempotency_keys``
still guarantees one order per key: the second transaction finds the first one's answer under
the write lock and replays it. Only the ``409`` for a concurrent duplicate is per process.

Rejected orders are recorded too (status ``rejected`` with the reason) and replay like the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Protocol

from control_plane import audit, stock
from control_plane.audit import canonical_json, iso
from control_plane.config import Settings
from control_plane.doorbell import ring_kitchens
from control_plane.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReuse,
    OrderRejected,
    OrdersShed,
)
from control_plane.ids import time_ordered_hex
from control_plane.orders import order_view_of, task_view
from control_plane.planning.backpressure import GLOBAL, Decision, IntakeVerdict, admit_order
from control_plane.planning.planner import PlannerSettings, plan_batch
from control_plane.planning.prep_times import PrepTimeModel
from control_plane.planning.world import (
    PRIORITY_RANK,
    BatchPlan,
    EquipmentUnit,
    KitchenSpec,
    Occupancy,
    OrderPlan,
    OrderRequest,
    SkuSpec,
    StationSpec,
    TaskPlan,
    World,
)
from control_plane.planning_state import PlanningState
from control_plane.problem_json import PROBLEM_MEDIA_TYPE, encode_problem, error_problem
from control_plane.queries import Reader
from control_plane.schemas import OrderCreate
from control_plane.store import Store, Writer

JSON_MEDIA_TYPE = "application/json"

log = logging.getLogger("brigade.intake")


def request_hash(body: Any) -> str:
    """SHA-256 of the canonical JSON of a parsed request body (key order, spacing ignored)."""
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass(frozen=True)
class IntakeAnswer:
    """The HTTP answer to an order request and what happened (for metrics)."""

    status: int
    media_type: str
    body: bytes
    outcome: str  # accepted | rejected | replayed
    reason: str | None = None
    headers: Mapping[str, str] | None = None
    #: Whether the answer is kept under the key for replays (not a 429: retrying must work).
    stored: bool = True
    #: Kitchens given new planned work by this request (their work doorbells ring).
    kitchens: tuple[str, ...] = ()


class KeysInFlight:
    """Idempotency keys (with their operator's scope) whose first request is running in this
    process.

    >>> keys = KeysInFlight()
    >>> with keys.hold("dispatch", "k1"):
    ...     ("dispatch", "k1") in keys, ("kiosk", "k1") in keys
    (True, False)
    """

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    @contextmanager
    def hold(self, scope: str, key: str) -> Iterator[None]:
        """Mark ``key`` of ``scope`` in flight for the block; :class:`IdempotencyKeyInFlight`
        if it is."""
        with self._lock:
            if (scope, key) in self._keys:
                raise IdempotencyKeyInFlight(
                    f"the first request with Idempotency-Key {key!r} is still being processed;"
                    " retry shortly"
                )
            self._keys.add((scope, key))
        try:
            yield
        finally:
            with self._lock:
                self._keys.discard((scope, key))


def stored_answer(
    reader: Reader, *, scope: str, key: str, body_hash: str, now: float, settings: Settings
) -> IntakeAnswer | None:
    """The answer stored under ``key`` by operator ``scope`` to replay, or None when the key is
    new to that operator (or expired).

    Raises :class:`IdempotencyKeyReuse` when the key was first used with a different body.
    """
    row = reader.idempotency_key(scope, key)
    return _answer_of(row, key=key, body_hash=body_hash, now=now, settings=settings)


def _answer_of(
    row: Any, *, key: str, body_hash: str, now: float, settings: Settings
) -> IntakeAnswer | None:
    """:func:`stored_answer` from the key's row (None: no row)."""
    if row is None or row["created_at"] < now - settings.idempotency_retention_s:
        return None
    if row["request_hash"] != body_hash:
        raise IdempotencyKeyReuse(
            f"Idempotency-Key {key!r} was first used with a different request body;"
            " use a new key for a new order"
        )
    if row["state"] != "done":
        # A claim left by an older version of the control plane; it never committed an order.
        return None
    return IntakeAnswer(
        status=int(row["response_status"]),
        media_type=str(row["response_media_type"]),
        body=bytes(row["response_body"]),
        outcome="replayed",
    )


@dataclass(frozen=True)
class PendingOrder:
    """An order request a read did not settle: what :func:`decide` decides in a write
    transaction. Plain data, so it can be sent to the intake writer process
    (:mod:`control_plane.intake_writer`) and decided there."""

    order: OrderCreate
    key: str
    body_hash: str
    now: float
    #: The operator (API token's name): the scope of the key, and the actor in the audit.
    actor: str
    #: The backpressure verdict taken on the read (None: the order named an unknown SKU then).
    admission: _Admission | None
    #: Only when ``admission`` is None: every scope's published decision, for the SKUs that
    #: appeared meanwhile (rare; never sent otherwise).
    decisions: Mapping[str, Decision] | None = None


def decide(
    tx: Writer, pending: PendingOrder, *, settings: Settings, planning: PlanningState
) -> IntakeAnswer:
    """Replay, reject or accept ``pending`` inside the write transaction ``tx``; the answer is
    stored under its key in the same transaction (unless it is a 429)."""
    scope, key, now = pending.actor, pending.key, pending.now
    # Checked again under the write lock: another process may have answered meanwhile.
    row = tx.idempotency_key(scope, key)
    replay = _answer_of(row, key=key, body_hash=pending.body_hash, now=now, settings=settings)
    if replay is not None:
        return replay
    if row is not None:
        tx.delete_idempotency_key(scope=scope, key=key)  # an expired answer or an old claim
    if pending.admission is None and pending.decisions is not None:
        planning = planning.with_decisions(pending.decisions)
    answer = _plan_and_record(
        tx,
        pending.order,
        key=key,
        now=now,
        actor=pending.actor,
        settings=settings,
        planning=planning,
        admission=pending.admission,
    )
    if answer.stored:
        tx.insert_idempotency_answer(
            scope=scope,
            key=key,
            request_hash=pending.body_hash,
            response_status=answer.status,
            response_media_type=answer.media_type,
            response_body=answer.body,
            created_at=now,
        )
    return answer


class OrderWriter(Protocol):
    """Decides pending orders elsewhere and answers once they are committed (the intake
    writer process, :class:`control_plane.intake_writer.IntakeWriter`)."""

    async def submit(self, pending: PendingOrder, planning: PlanningState) -> IntakeAnswer: ...


def submit_order(
    store: Store,
    order: OrderCreate,
    *,
    key: str,
    body_hash: str,
    now: float,
    actor: str,
    settings: Settings,
    in_flight: KeysInFlight,
    planning: PlanningState | None = None,
) -> IntakeAnswer:
    """Accept, reject or replay one order request (see the module docstring).

    ``planning`` holds the control loop's backpressure decisions and prep-time model (none
    given: every scope normal, recipe durations)."""
    planning = planning if planning is not None else PlanningState()
    # Keys are the operator's own (``actor``, the API token's name): another operator's equal
    # key is another request.
    with in_flight.hold(actor, key):
        step = _first_look(
            store, order, key=key, body_hash=body_hash, now=now, actor=actor,
            settings=settings, planning=planning,
        )  # fmt: skip
        if isinstance(step, IntakeAnswer):
            return step
        # Group-committed with concurrent intakes: one fsync per batch, and no answer before
        # the batch that holds this order (and its answer under the key) is on disk.
        answer = store.submit(partial(decide, pending=step, settings=settings, planning=planning))
    # Committed: the kitchens' agents may sync for their new tasks now, not at their interval.
    ring_kitchens(answer.kitchens)
    return answer


async def submit_order_on_loop(
    store: Store,
    order: OrderCreate,
    *,
    key: str,
    body_hash: str,
    now: float,
    actor: str,
    settings: Settings,
    in_flight: KeysInFlight,
    planning: PlanningState | None = None,
    writer: OrderWriter | None = None,
) -> IntakeAnswer:
    """:func:`submit_order` for the API's event loop. The read is taken on the loop thread;
    the decision is taken by ``writer`` (the intake writer process, on another core) or, with
    none, on the loop thread, group-committed with the orders of the same turn of the loop
    (:meth:`Store.submit_on_loop`). Either way the answer comes once its batch is on disk."""
    planning = planning if planning is not None else PlanningState()
    with in_flight.hold(actor, key):
        step = _first_look(
            store, order, key=key, body_hash=body_hash, now=now, actor=actor,
            settings=settings, planning=planning,
        )  # fmt: skip
        if isinstance(step, IntakeAnswer):
            return step
        if writer is not None:
            answer = await writer.submit(step, planning)
        else:
            answer = await store.submit_on_loop(
                partial(decide, pending=step, settings=settings, planning=planning)
            )
    ring_kitchens(answer.kitchens)
    return answer


def _first_look(
    store: Store,
    order: OrderCreate,
    *,
    key: str,
    body_hash: str,
    now: float,
    actor: str,
    settings: Settings,
    planning: PlanningState,
) -> IntakeAnswer | PendingOrder:
    """The answer when a read settles it (a replay, or shed by backpressure), else the order
    for :func:`decide` to decide in a write transaction."""
    with store.read() as reader:
        replay = stored_answer(
            reader, scope=actor, key=key, body_hash=body_hash, now=now, settings=settings
        )
        # Admission is decided here, on a read transaction and the published decisions,
        # so a shed request never queues in the single writer behind accepted orders.
        admission = None if replay is not None else _admission(reader, order, planning)
    if replay is not None:
        return replay
    if admission is not None and admission.verdict.status == 429:
        return _shed_answer(admission.verdict, key=key)
    return PendingOrder(
        order,
        key,
        body_hash,
        now,
        actor,
        admission,
        decisions=dict(planning.decisions()) if admission is None else None,
    )


class _ShedLog:
    """Shed refusals for operators: one structured log line per reason at most every
    ``interval_s``, carrying how many refusals it stands for.

    Chosen over an audit record per refusal: shedding exists because the single writer is
    overloaded, and a durable (fsynced) write per refused request would put the refusals back
    in that queue. The ``brigade_orders_total{outcome="rejected",reason="backpressure_*"}``
    metric counts every refusal; this line says why, without flooding the log under load.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def refused(self, verdict: IntakeVerdict, *, key: str) -> bool:
        """Note one refusal; returns whether a log line was written for it."""
        reason = verdict.reason or "backpressure"
        at = time.monotonic()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and at - last < self.interval_s:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return False
            self._last[reason] = at
            suppressed = self._suppressed.pop(reason, 0)
        log.warning(
            "order shed (%s): %s; retry after %s s (%d more refusals since the last line)",
            reason,
            verdict.why,
            verdict.retry_after_s,
            suppressed,
            extra={
                "event": "order.shed",
                "reason": reason,
                "why": verdict.why,
                "retry_after_s": verdict.retry_after_s,
                "idempotency_key": key,
                "suppressed": suppressed,
            },
        )
        return True


SHED_LOG = _ShedLog()


def _shed_answer(verdict: IntakeVerdict, *, key: str) -> IntakeAnswer:
    """``429 orders-shed`` + ``Retry-After``: not recorded and not stored under the key (a
    retry later is a new attempt); logged for operators through :data:`SHED_LOG`."""
    assert verdict.reason is not None and verdict.retry_after_s is not None
    SHED_LOG.refused(verdict, key=key)
    shed = OrdersShed(
        f"not taking new orders now ({verdict.why}); retry after {verdict.retry_after_s} s",
        reason=verdict.reason,
        retry_after_s=verdict.retry_after_s,
    )
    return IntakeAnswer(
        429,
        PROBLEM_MEDIA_TYPE,
        encode_problem(error_problem(shed)),
        "rejected",
        verdict.reason,
        headers={"Retry-After": str(verdict.retry_after_s)},
        stored=False,
    )


def purge_expired_keys(store: Store, *, now: float, settings: Settings) -> int:
    """Forget answers older than the retention; returns how many were removed."""
    with store.write() as tx:
        return tx.purge_idempotency_keys(created_before=now - settings.idempotency_retention_s)


# --- planning at intake ------------------------------------------------------------------------

#: Planner reasons shown under the code intake has always used for them (codes are stable API).
_STABLE_REASONS = {"kitchen_unavailable": "sku_not_offered", "stock_insufficient": "out_of_stock"}
#: Equipment that measures rather than cooks gives no capacity, so its health does not count.
_NOT_CAPACITY = frozenset({"probe"})
#: How many of the least loaded able kitchens are planned at first (all of them if none fits).
_FIRST_CANDIDATES = 2


@dataclass(frozen=True)
class _Catalogue:
    """What intake read of the SKUs an order names."""

    specs: dict[str, SkuSpec]
    unknown: list[str]


@dataclass(frozen=True)
class _CatalogueView:
    """Every SKU as the planner sees it, and the kitchens and stations (as in their tables,
    by id): what intake reads of the catalogue, the same for every order until it changes
    (memoized per catalogue version, :meth:`Reader.memoized`)."""

    skus: Mapping[str, SkuSpec]
    #: ``(id, status)`` of every kitchen.
    kitchens: tuple[tuple[str, str], ...]
    #: The stations of each kitchen: their ids, and as the planner sees them.
    offered: Mapping[str, frozenset[str]]
    station_specs: Mapping[str, tuple[StationSpec, ...]]


def _catalogue(reader: Reader) -> _CatalogueView:
    return reader.memoized("intake.catalogue", partial(_read_catalogue, reader))


def _read_catalogue(reader: Reader) -> _CatalogueView:
    skus = {str(row["id"]): _sku_spec(row) for row in reader.skus()}
    specs: dict[str, list[StationSpec]] = {}
    for row in reader.stations():
        specs.setdefault(str(row["kitchen_id"]), []).append(
            StationSpec(str(row["id"]), int(row["slots"]))
        )
    # Read-only views: one instance serves every request until the catalogue changes.
    return _CatalogueView(
        MappingProxyType(skus),
        tuple((str(row["id"]), str(row["status"])) for row in reader.kitchens()),
        MappingProxyType({k: frozenset(s.station_id for s in found) for k, found in specs.items()}),
        MappingProxyType({k: tuple(found) for k, found in specs.items()}),
    )


def _sku_spec(row: Any) -> SkuSpec:
    steps = json.loads(row["recipe_steps_json"])
    return SkuSpec(
        sku_id=str(row["id"]),
        station_id=row["station_id"],
        duration_s=float(row["total_duration_s"]),
        freshness_window_min=float(row["freshness_window_min"]),
        priority=str(row["priority"]),
        equipment_kinds=frozenset(
            str(step["equipment_kind"])
            for step in steps
            if step.get("equipment_kind") and not step.get("manual")
        ),
        max_batch_units=int(row["max_batch_units"]),
        ingredients=tuple(
            (str(ingredient), float(per_unit))
            for ingredient, per_unit in json.loads(row["ingredients_json"])
        ),
    )


def _sku_specs(view: _CatalogueView, sku_ids: Iterable[str]) -> _Catalogue:
    specs: dict[str, SkuSpec] = {}
    unknown: list[str] = []
    for sku_id in sorted(set(sku_ids)):
        spec = view.skus.get(sku_id)
        if spec is None:
            unknown.append(sku_id)
        else:
            specs[sku_id] = spec
    return _Catalogue(specs, unknown)


@dataclass(frozen=True)
class _Admission:
    """The backpressure verdict on an order, and the candidate kitchens whose decision keeps
    it away (paused, shedding, or throttling its priority)."""

    verdict: IntakeVerdict
    refusing: frozenset[str]


def _admission(reader: Reader, order: OrderCreate, planning: PlanningState) -> _Admission | None:
    """Admit or refuse ``order`` under the published decisions of the global scope and the
    active kitchens that have its stations (None: it names an unknown SKU, rejected later)."""
    view = _catalogue(reader)
    catalogue = _sku_specs(view, (item.sku_id for item in order.items))
    if catalogue.unknown:
        return None
    needed = {spec.station_id for spec in catalogue.specs.values()}
    nothing: frozenset[str] = frozenset()
    candidates = [
        kitchen_id
        for kitchen_id, status in view.kitchens
        if status == "active" and needed <= view.offered.get(kitchen_id, nothing)
    ]
    decisions = planning.decisions_for(candidates)
    priority = _worst_priority(order, catalogue.specs)
    refusing = frozenset(
        d.scope for d in decisions if d.scope != GLOBAL and _refuses_new_work(d, priority)
    )
    return _Admission(admit_order(priority, decisions), refusing)


def _refuses_new_work(decision: Decision, priority: str) -> bool:
    """Whether a kitchen's decision keeps a new order of ``priority`` away from it: paused,
    shedding (``Retry-After``) or throttling that priority."""
    actions = decision.actions
    return (
        not actions.accept_new_work
        or actions.retry_after_s is not None
        or priority in actions.reject_priorities
    )


def _worst_priority(order: OrderCreate, specs: Mapping[str, SkuSpec]) -> str:
    """The order's priority class, or the lowest of its SKUs' if lower (backpressure input)."""
    classes = [order.priority, *(spec.priority for spec in specs.values())]
    return max(classes, key=lambda p: PRIORITY_RANK.get(p, 1))


def _kitchen_specs(
    tx: Reader,
    *,
    view: _CatalogueView,
    catalogue: _Catalogue,
    paused_by_backpressure: frozenset[str],
) -> list[KitchenSpec]:
    """Every kitchen as the planner sees it: a kitchen backpressure pauses counts as paused;
    equipment health (``None``: none registered); tracked stock (``None``: nothing tracked)."""
    needed_ingredients = {i for spec in catalogue.specs.values() for i, _ in spec.ingredients}
    equipment: dict[str, list[EquipmentUnit]] = {}
    for row in tx.planning_equipment():
        if row["kind"] not in _NOT_CAPACITY:
            equipment.setdefault(row["kitchen_id"], []).append(
                EquipmentUnit(row["id"], row["kind"], row["station_id"], row["health"])
            )
    stock: dict[str, dict[str, float]] = {}
    for row in tx.kitchen_stock() if needed_ingredients else ():
        stock.setdefault(row["kitchen_id"], {})[row["ingredient"]] = float(row["quantity"])
    kitchens: list[KitchenSpec] = []
    for kitchen_id, stored_status in view.kitchens:
        status = stored_status
        if status == "active" and kitchen_id in paused_by_backpressure:
            status = "paused"
        tracked = stock.get(kitchen_id)
        if tracked is not None:
            # An ingredient the kitchen does not track is not limited there.
            tracked = {i: tracked.get(i, math.inf) for i in needed_ingredients} | tracked
        units = equipment.get(kitchen_id)
        kitchens.append(
            KitchenSpec(
                kitchen_id,
                status,
                view.station_specs.get(kitchen_id, ()),
                equipment=tuple(units) if units else None,
                stock=tracked,
            )
        )
    return kitchens


def _world(
    tx: Reader,
    kitchens: Sequence[KitchenSpec],
    *,
    now: float,
    order: OrderCreate,
    catalogue: _Catalogue,
    prep: PrepTimeModel,
) -> World:
    """``kitchens`` with the slot intervals already booked where this order's tasks could go:
    their active kitchens, the stations it needs, from the earliest start its freshness allows
    to its latest ready time (so the cost follows the order's window, not the whole queue)."""
    specs = catalogue.specs
    needed_stations = {spec.station_id for spec in specs.values()}
    promised_by = order.promised_by_ts
    longest_s = max(
        (
            prep.estimate(k.kitchen_id, spec.sku_id, nominal_s=spec.duration_s).p90_s
            for k in kitchens
            if k.status == "active"
            for spec in specs.values()
        ),
        default=0.0,
    )
    freshest_s = max((spec.freshness_window_min * 60.0 for spec in specs.values()), default=0.0)
    after = max(now, promised_by - freshest_s - longest_s)
    before = promised_by - order.transport_min * 60.0
    occupancy: dict[tuple[str, str], Occupancy] = {}
    for kitchen in kitchens:
        if kitchen.status != "active":
            continue
        for station in kitchen.stations:
            if station.station_id not in needed_stations:
                continue
            rows = tx.booked_intervals(
                kitchen_id=kitchen.kitchen_id,
                station_id=station.station_id,
                after=after,
                before=before,
            )
            occupancy[kitchen.kitchen_id, station.station_id] = Occupancy.of(
                (float(r["start_after"]), float(r["planned_finish"]), int(r["n"])) for r in rows
            )
    return World(tuple(kitchens), specs, prep=prep, occupancy=occupancy)


def _plan(
    tx: Reader,
    request: OrderRequest,
    kitchens: list[KitchenSpec],
    *,
    now: float,
    order: OrderCreate,
    catalogue: _Catalogue,
    prep: PrepTimeModel,
    settings: PlannerSettings,
) -> BatchPlan:
    """Plan at the least loaded kitchens that can make the order first; only if none of them
    can is every kitchen tried (which also gives the reason when nobody can). Reading the
    bookings of a few kitchens instead of all keeps intake cheap in a large fleet."""
    needed = {spec.station_id for spec in catalogue.specs.values()}
    able = [
        k for k in kitchens if k.status == "active" and needed <= {s.station_id for s in k.stations}
    ]
    if len(able) > _FIRST_CANDIDATES:
        open_work: dict[str, float] = {}
        for row in tx.station_open_work():
            if row["station_id"] in needed:
                open_work[row["kitchen_id"]] = open_work.get(row["kitchen_id"], 0.0) + float(
                    row["open_work_s"]
                )

        def load(k: KitchenSpec) -> tuple[float, str]:
            slots = sum(s.slots for s in k.stations if s.station_id in needed)
            return (open_work.get(k.kitchen_id, 0.0) / max(slots, 1), k.kitchen_id)

        first = sorted(able, key=load)[:_FIRST_CANDIDATES]
        world = _world(tx, first, now=now, order=order, catalogue=catalogue, prep=prep)
        batch = plan_batch(now, [request], world, settings)
        if not batch.rejections:
            return batch
    world = _world(tx, kitchens, now=now, order=order, catalogue=catalogue, prep=prep)
    return plan_batch(now, [request], world, settings)


def _reject(
    tx: Writer,
    order: OrderCreate,
    *,
    order_id: str,
    key: str,
    now: float,
    actor: str,
    reason: str,
    detail: str,
    extra: Mapping[str, Any] | None = None,
) -> IntakeAnswer:
    """Record the order as rejected (audited) and answer 422 ``order-rejected``."""
    _insert_order(tx, order, order_id=order_id, key=key, now=now, status="rejected", reason=reason)
    audit.append(
        tx,
        at=now,
        actor_type="operator",
        actor_id=actor,
        action="order.rejected",
        subject_type="order",
        subject_id=order_id,
        order_id=order_id,
        reason=reason,
        details={"detail": detail, "idempotency_key": key, **(extra or {})},
    )
    error = OrderRejected(detail, reason=reason)
    body = error_problem(error) | {"order_id": order_id, **(extra or {})}
    return IntakeAnswer(422, PROBLEM_MEDIA_TYPE, encode_problem(body), "rejected", reason)


def _insert_order(
    tx: Writer,
    order: OrderCreate,
    *,
    order_id: str,
    key: str,
    now: float,
    status: str,
    reason: str | None = None,
    kitchen_id: str | None = None,
    predicted_ready_at: float | None = None,
) -> None:
    tx.insert_order(
        order_id=order_id,
        idempotency_key=key,
        status=status,
        reason=reason,
        kitchen_id=kitchen_id,
        promised_by=order.promised_by_ts,
        destination=order.destination,
        transport_min=order.transport_min,
        priority=order.priority,
        predicted_ready_at=predicted_ready_at,
        created_at=now,
    )
    for line, item in enumerate(order.items):
        tx.insert_order_item(
            order_id=order_id, line=line, sku_id=item.sku_id, quantity=item.quantity
        )


def _plan_and_record(
    tx: Writer,
    order: OrderCreate,
    *,
    key: str,
    now: float,
    actor: str,
    settings: Settings,
    planning: PlanningState,
    admission: _Admission | None = None,
) -> IntakeAnswer:
    """Check, admit, plan, reserve and record one order (fail fast, SPEC guarantee 2).

    ``admission``: the verdict taken before the write transaction (None: take it here)."""
    order_id = "ord-" + time_ordered_hex()
    view = _catalogue(tx)
    catalogue = _sku_specs(view, (item.sku_id for item in order.items))
    rejected = partial(_reject, tx, order, order_id=order_id, key=key, now=now, actor=actor)
    if catalogue.unknown:
        return rejected(
            reason="sku_unknown", detail=f"unknown SKU(s): {', '.join(catalogue.unknown)}"
        )
    for item in order.items:
        window = catalogue.specs[item.sku_id].freshness_window_min
        if order.transport_min > window:
            return rejected(
                reason="freshness_infeasible",
                detail=f"transport of {order.transport_min:g} min exceeds the {window:g} min"
                f" freshness window of {item.sku_id}",
            )
    if admission is None:
        admission = _admission(tx, order, planning)
        assert admission is not None  # the catalogue had no unknown SKU
    verdict = admission.verdict
    if verdict.status == 429:
        # Only when the SKUs appeared between the admission read and this transaction.
        return _shed_answer(verdict, key=key)
    if not verdict.accept:
        assert verdict.reason is not None
        offered_at = order.promised_by_ts + verdict.offered_promise_delay_s
        return rejected(
            reason=verdict.reason,
            detail=f"low-priority orders are refused while the kitchens catch up ({verdict.why});"
            " a later promise may be accepted",
            extra={"offered_promised_by": iso(offered_at)},
        )
    # A kitchen that is paused, shedding or throttling this priority gets none of it, even
    # when another candidate's headroom admitted the order (or on the all-kitchens fallback).
    kitchens = _kitchen_specs(
        tx,
        view=view,
        catalogue=catalogue,
        paused_by_backpressure=admission.refusing,
    )
    request = OrderRequest(
        items=tuple((item.sku_id, item.quantity) for item in order.items),
        promised_by=order.promised_by_ts,
        transport_min=order.transport_min,
        order_id=order_id,
        priority=order.priority,
    )
    batch = _plan(
        tx,
        request,
        kitchens,
        now=now,
        order=order,
        catalogue=catalogue,
        prep=planning.prep_model(),
        settings=PlannerSettings(asap=settings.planning_mode == "asap"),
    )
    if batch.rejections:
        _, rejection = batch.rejections[0]
        reason = _STABLE_REASONS.get(rejection.reason, rejection.reason)
        return rejected(reason=reason, detail=rejection.detail)
    plan = batch.orders[0]
    task_ids = {task.task_key: "task-" + time_ordered_hex() for task in batch.tasks}
    needs = {
        task_ids[task.task_key]: _task_needs(task, catalogue.specs[task.sku_id])
        for task in batch.tasks
    }
    insert = partial(
        _insert_order,
        tx,
        order,
        order_id=order_id,
        key=key,
        now=now,
        status="planned",
        kitchen_id=plan.kitchen_id,
        predicted_ready_at=plan.predicted_ready_at,
    )
    taken: list[str] = []
    try:
        if any(needs.values()):
            # The order row and its stock go together: if any ingredient is short, neither
            # stays.
            with tx.savepoint():
                insert()
                taken = stock.reserve(
                    tx, order_id=order_id, kitchen_id=plan.kitchen_id, task_needs=needs, now=now
                )
        else:
            insert()
    except stock.OutOfStock as short:
        # The planner saw the same stock in this transaction, so this is the last line of
        # defence (e.g. a store shared with a process that does not take the write lock).
        return rejected(
            reason="out_of_stock",
            detail=f"not enough {', '.join(short.ingredients)} left at {plan.kitchen_id}",
        )
    _record_plan(tx, batch.tasks, task_ids, plan, order_id=order_id, key=key, now=now, actor=actor)
    stock.raise_low_stock_alerts(tx, kitchen_id=plan.kitchen_id, ingredients=taken, now=now)
    accepted = _accepted_view(
        order, order_id=order_id, plan=plan, tasks=batch.tasks, task_ids=task_ids, now=now
    )
    body_bytes = json.dumps(accepted, separators=(",", ":")).encode()
    planned_at = tuple(sorted({task.kitchen_id for task in batch.tasks}))
    return IntakeAnswer(201, JSON_MEDIA_TYPE, body_bytes, "accepted", kitchens=planned_at)


def _accepted_view(
    order: OrderCreate,
    *,
    order_id: str,
    plan: OrderPlan,
    tasks: Iterable[TaskPlan],
    task_ids: Mapping[str, str],
    now: float,
) -> dict[str, Any]:
    """The order just accepted as ``GET /v1/orders/{id}`` shows it, from what intake wrote (the
    columns as stored: SQLite gives ``transport_min`` back as REAL; the tasks are all new, so
    in the same order as a read, by id)."""
    row = {
        "id": order_id,
        "status": "planned",
        "reason": None,
        "kitchen_id": plan.kitchen_id,
        "predicted_ready_at": plan.predicted_ready_at,
        "promised_by": order.promised_by_ts,
        "destination": order.destination,
        "transport_min": float(order.transport_min),
        "priority": order.priority,
        "created_at": now,
        "ready_at": None,
    }
    items = [{"sku_id": item.sku_id, "quantity": item.quantity} for item in order.items]
    views = [
        task_view(
            {
                "id": task_ids[task.task_key],
                "sku_id": task.sku_id,
                "quantity": task.quantity,
                "state": "planned",
                "kitchen_id": task.kitchen_id,
                "station_id": task.station_id,
                "start_after": task.planned_start,
                "finish_by": task.finish_by,
                "predicted_ready_at": task.predicted_ready_at,
                "fencing_token": 0,
                "lease_agent_id": None,
                "start_by": None,
                "started_at": None,
                "finished_at": None,
                "cancel_reason": None,
                "wasted_quantity": None,
                "reassigned_at": None,
            }
        )
        for task in tasks
    ]
    views.sort(key=lambda view: str(view["id"]))
    return order_view_of(row, items, views)


def _task_needs(task: TaskPlan, sku: SkuSpec) -> dict[str, float]:
    units = sum(line.quantity for line in task.lines)
    return {ingredient: per_unit * units for ingredient, per_unit in sku.ingredients}


def _record_plan(
    tx: Writer,
    tasks: Iterable[TaskPlan],
    task_ids: Mapping[str, str],
    plan: OrderPlan,
    *,
    order_id: str,
    key: str,
    now: float,
    actor: str,
) -> None:
    # One batch: the chain's head is read once and the order's records written together.
    records = audit.Batch(tx)
    records.append(
        at=now,
        actor_type="operator",
        actor_id=actor,
        action="order.accepted",
        subject_type="order",
        subject_id=order_id,
        order_id=order_id,
        kitchen_id=plan.kitchen_id,
        details={
            "predicted_ready_at": plan.predicted_ready_at,
            "idempotency_key": key,
            "ingredients": dict(plan.reservations),
        },
    )
    for task in tasks:
        task_id = task_ids[task.task_key]
        duration_s = task.predicted_ready_at - task.planned_start
        tx.insert_planned_task(
            task_id=task_id,
            kitchen_id=task.kitchen_id,
            station_id=task.station_id,
            sku_id=task.sku_id,
            quantity=task.quantity,
            duration_s=duration_s,
            start_after=task.planned_start,
            planned_finish=task.planned_finish,
            finish_by=task.finish_by,
            predicted_ready_at=task.predicted_ready_at,
            created_at=now,
        )
        tx.link_task_order(task_id=task_id, order_id=order_id)
        records.append(
            at=now,
            actor_type="system",
            actor_id="planner",
            action="task.planned",
            subject_type="task",
            subject_id=task_id,
            order_id=order_id,
            kitchen_id=task.kitchen_id,
            station_id=task.station_id,
            details={
                "sku_id": task.sku_id,
                "quantity": task.quantity,
                "start_after": task.planned_start,
                "planned_finish": task.planned_finish,
                "finish_by": task.finish_by,
                "predicted_ready_at": task.predicted_ready_at,
                "slot": task.slot,
            },
        )
    records.flush()
