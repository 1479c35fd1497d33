"""Kitchen ingredient stock: reservations at intake, release on cancellation, deliveries, alerts.

An ingredient a kitchen has a ``kitchen_stock`` row for is *tracked*; anything else is not
limited. Taking stock is one conditional statement (``quantity = quantity - ? WHERE quantity >=
?``), never a read followed by a write, so concurrent intakes cannot oversell even across
processes sharing the store. Each reservation is recorded per order and task, and released at
most once (``released_at``, with ``release_reason``), so cancelling twice gives nothing back
twice. A task the control loop re-plans to another kitchen takes its stock with it
(:func:`move_reservations`): given back at the old kitchen and taken at the new one in the
move's transaction, or the move does not happen.

A tracked ingredient that falls below its low-water mark raises one ``low_stock`` alert (in the
alerts list, audited); stock back at the mark resolves it and re-arms it, so it is raised again
only after that.

>>> view = stock_view(reader, "k1")                                    # doctest: +SKIP
>>> view["items"][0]["ingredient"], view["items"][0]["low"]            # doctest: +SKIP
('chicken-thigh', False)
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from control_plane import audit
from control_plane.alerts import CONTROL_PLANE_SOURCE
from control_plane.audit import iso
from control_plane.errors import NotFound
from control_plane.queries import Reader
from control_plane.schemas import StockDelivery
from control_plane.store import Store, Writer

LOW_STOCK = "low_stock"
#: Why a reservation was given back (``stock_reservations.release_reason``, audit ``reason``).
ORDER_CANCELLED = "order_cancelled"
TASK_MOVED = "task_moved"
#: A cancelled task that had been leased, once known never started (start-by passed while the
#: agent reported no start, or the agent released it).
CANCELLED_UNSTARTED = "cancelled_unstarted"
#: A task that failed before it started.
FAILED_UNSTARTED = "failed_unstarted"
#: A reassigned task the old kitchen may still cook: its stock there stays used up.
KEPT_POSSIBLE_DUPLICATE = "kept_possible_duplicate"
#: Who moves reservations with re-planned tasks (as its audit records name it).
REPLANNER = "replanner"


class OutOfStock(Exception):
    """A conditional decrement found less than needed (the reservation is rolled back)."""

    def __init__(self, ingredients: list[str]) -> None:
        super().__init__(", ".join(ingredients))
        self.ingredients = ingredients


def item_view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "ingredient": row["ingredient"],
        "quantity": row["quantity"],
        "low_water_mark": row["low_water_mark"],
        "low": row["quantity"] < row["low_water_mark"],
        "low_alerted_at": iso(row["low_alerted_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def stock_view(reader: Reader, kitchen_id: str) -> dict[str, Any]:
    """A kitchen's tracked ingredients; :class:`NotFound` for an unknown kitchen."""
    if reader.kitchen(kitchen_id) is None:
        raise NotFound(f"no kitchen {kitchen_id!r}")
    return {
        "kitchen_id": kitchen_id,
        "items": [item_view(row) for row in reader.kitchen_stock(kitchen_id)],
    }


def reserve(
    tx: Writer,
    *,
    order_id: str,
    kitchen_id: str,
    task_needs: Mapping[str, Mapping[str, float]],
    now: float,
) -> list[str]:
    """Take what each task needs of the kitchen's *tracked* ingredients and record it.

    ``task_needs`` maps task id to ``{ingredient: amount}``. All or nothing: if any ingredient
    is short, every decrement is rolled back and :class:`OutOfStock` names the short ones.
    Returns the ingredients taken (to check against their low-water marks). The order row must
    exist already (reservations refer to it).
    """
    tracked = {str(row["ingredient"]) for row in tx.kitchen_stock(kitchen_id)}
    totals: dict[str, float] = {}
    for needs in task_needs.values():
        for ingredient, amount in needs.items():
            if ingredient in tracked and amount > 0:
                totals[ingredient] = totals.get(ingredient, 0.0) + amount
    if not totals:
        return []
    with tx.savepoint():
        short = [
            ingredient
            for ingredient in sorted(totals)
            if tx.take_stock(
                kitchen_id=kitchen_id, ingredient=ingredient, quantity=totals[ingredient], at=now
            )
            == 0
        ]
        if short:
            raise OutOfStock(short)
        for task_id in sorted(task_needs):
            for ingredient, amount in sorted(task_needs[task_id].items()):
                if ingredient in totals and amount > 0:
                    tx.insert_stock_reservation(
                        order_id=order_id,
                        task_id=task_id,
                        kitchen_id=kitchen_id,
                        ingredient=ingredient,
                        quantity=amount,
                        reserved_at=now,
                    )
    return sorted(totals)


def release(
    tx: Writer,
    *,
    task_ids: Iterable[str],
    now: float,
    actor: str,
    reason: str = ORDER_CANCELLED,
    actor_type: str = "operator",
) -> dict[str, float]:
    """Give back what ``task_ids`` hold (tasks cancelled before they started), for every order
    they serve: a batch is only cancelled once none of its orders is open, and what an order
    cancelled earlier reserved for it was kept until then. Each reservation at most once.
    Returns ``{ingredient: amount}`` given back (audited as ``stock.released`` with ``reason``,
    on each reservation's order)."""
    held = [
        row
        for task_id in sorted(set(task_ids))
        for row in tx.held_stock_reservations_of_task(task_id)
    ]
    given = _give_back(tx, held, reason=reason, actor_type=actor_type, actor=actor, now=now)
    totals: dict[str, float] = {}
    for (_, ingredient), amount in sorted(given.items()):
        totals[ingredient] = totals.get(ingredient, 0.0) + amount
    return totals


def move_reservations(
    tx: Writer,
    *,
    task_id: str,
    to_kitchen_id: str,
    order_needs: Mapping[str, Mapping[str, float]],
    now: float,
    keep_old: bool = False,
    actor_type: str = "system",
    actor: str = REPLANNER,
    reason: str = TASK_MOVED,
) -> list[str]:
    """Move a re-planned task's stock with it, inside the move's transaction: give back what it
    holds (at its old kitchen, ``task_moved``), then take what it needs at ``to_kitchen_id`` by
    conditional decrement (``order_needs``: ``{order_id: {ingredient: amount}}``, what the task
    uses for each order it serves; untracked ingredients are not limited).

    All or nothing: if the new kitchen is short of anything, every change is rolled back and
    :class:`OutOfStock` names what is short (the task must not move). Returns the ingredients
    taken at the new kitchen (to check against their low-water marks).

    ``keep_old``: the old kitchen may still cook the task (an operator moved it off a lease
    that may have started), so what it holds there stays used up: the reservation is closed as
    ``kept_possible_duplicate`` (one task holds one reservation per ingredient) without giving
    anything back, and audited as ``stock.kept``."""
    taken: set[str] = set()
    with tx.savepoint():
        held = tx.held_stock_reservations_of_task(task_id)
        if keep_old:
            for row in held:
                if tx.release_stock_reservation(
                    order_id=row["order_id"],
                    task_id=row["task_id"],
                    ingredient=row["ingredient"],
                    reason=KEPT_POSSIBLE_DUPLICATE,
                    at=now,
                ):
                    audit.append(
                        tx,
                        at=now,
                        actor_type=actor_type,
                        actor_id=actor,
                        action="stock.kept",
                        subject_type="ingredient",
                        subject_id=f"{row['kitchen_id']}/{row['ingredient']}",
                        order_id=row["order_id"],
                        kitchen_id=row["kitchen_id"],
                        reason=KEPT_POSSIBLE_DUPLICATE,
                        details={
                            "ingredient": row["ingredient"],
                            "quantity": float(row["quantity"]),
                            "task_id": task_id,
                        },
                    )
        else:
            _give_back(tx, held, reason=reason, actor_type=actor_type, actor=actor, now=now)
        for order_id in sorted(order_needs):
            got = reserve(
                tx,
                order_id=order_id,
                kitchen_id=to_kitchen_id,
                task_needs={task_id: order_needs[order_id]},
                now=now,
            )
            for ingredient in got:
                audit.append(
                    tx,
                    at=now,
                    actor_type=actor_type,
                    actor_id=actor,
                    action="stock.reserved",
                    subject_type="ingredient",
                    subject_id=f"{to_kitchen_id}/{ingredient}",
                    order_id=order_id,
                    kitchen_id=to_kitchen_id,
                    reason=reason,
                    details={
                        "ingredient": ingredient,
                        "quantity": order_needs[order_id][ingredient],
                        "task_id": task_id,
                    },
                )
            taken.update(got)
    return sorted(taken)


def _give_back(
    tx: Writer,
    held: Iterable[sqlite3.Row],
    *,
    reason: str,
    actor_type: str,
    actor: str,
    now: float,
) -> dict[tuple[str, str], float]:
    """Release each held reservation once, return its quantity to its kitchen's stock, audit
    ``stock.released`` per order, kitchen and ingredient, and re-arm low-stock alerts; returns
    ``{(kitchen_id, ingredient): amount}`` given back."""
    given: dict[tuple[str, str, str], float] = {}
    for row in held:
        if not tx.release_stock_reservation(
            order_id=row["order_id"],
            task_id=row["task_id"],
            ingredient=row["ingredient"],
            reason=reason,
            at=now,
        ):
            continue
        kitchen_id, ingredient = str(row["kitchen_id"]), str(row["ingredient"])
        tx.add_stock(
            kitchen_id=kitchen_id,
            ingredient=ingredient,
            quantity=float(row["quantity"]),
            low_water_mark=None,
            at=now,
        )
        key = (str(row["order_id"]), kitchen_id, ingredient)
        given[key] = given.get(key, 0.0) + float(row["quantity"])
    totals: dict[tuple[str, str], float] = {}
    for (order_id, kitchen_id, ingredient), amount in sorted(given.items()):
        audit.append(
            tx,
            at=now,
            actor_type=actor_type,
            actor_id=actor,
            action="stock.released",
            subject_type="ingredient",
            subject_id=f"{kitchen_id}/{ingredient}",
            order_id=order_id,
            kitchen_id=kitchen_id,
            reason=reason,
            details={"ingredient": ingredient, "quantity": amount},
        )
        totals[kitchen_id, ingredient] = totals.get((kitchen_id, ingredient), 0.0) + amount
    for kitchen_id, ingredient in sorted(totals):
        _rearm_low_stock(
            tx,
            kitchen_id=kitchen_id,
            ingredient=ingredient,
            now=now,
            actor_type=actor_type,
            actor=actor,
        )
    return totals


def raise_low_stock_alerts(
    tx: Writer, *, kitchen_id: str, ingredients: Iterable[str], now: float
) -> int:
    """Raise one ``low_stock`` alert per ingredient that just fell below its mark (once until
    restocked); returns how many were raised."""
    raised = 0
    for ingredient in ingredients:
        if not tx.mark_stock_low(kitchen_id=kitchen_id, ingredient=ingredient, at=now):
            continue
        row = tx.stock_item(kitchen_id, ingredient)
        assert row is not None
        alert_id = _low_stock_prefix(kitchen_id, ingredient) + uuid.uuid4().hex[:16]
        message = (
            f"{ingredient} at kitchen {kitchen_id} is low: {row['quantity']:g} left,"
            f" below the mark of {row['low_water_mark']:g}"
        )
        tx.insert_alert(
            agent_id=CONTROL_PLANE_SOURCE,
            alert_id=alert_id,
            kitchen_id=kitchen_id,
            kind=LOW_STOCK,
            severity="warning",
            device_id=None,
            message=message,
            value=float(row["quantity"]),
            limit_value=float(row["low_water_mark"]),
            raised_at=now,
        )
        audit.append(
            tx,
            at=now,
            actor_type="system",
            actor_id="stock",
            action="stock.low",
            subject_type="ingredient",
            subject_id=f"{kitchen_id}/{ingredient}",
            kitchen_id=kitchen_id,
            reason=LOW_STOCK,
            details={
                "alert_id": alert_id,
                "quantity": row["quantity"],
                "low_water_mark": row["low_water_mark"],
            },
        )
        raised += 1
    return raised


def _low_stock_prefix(kitchen_id: str, ingredient: str) -> str:
    """How the ids of an ingredient's ``low_stock`` alerts start, so restocking can find them
    (kitchen ids and ingredients are identifiers without dots)."""
    return f"low-stock.{kitchen_id}.{ingredient}."


def _rearm_low_stock(
    tx: Writer,
    *,
    kitchen_id: str,
    ingredient: str,
    now: float,
    actor: str,
    actor_type: str = "operator",
) -> None:
    """Back at or above its mark: re-arm the alert, and resolve the one raised (the condition
    cleared; acknowledging it is still a person's act)."""
    row = tx.stock_item(kitchen_id, ingredient)
    if row is None or not tx.clear_stock_low(kitchen_id=kitchen_id, ingredient=ingredient):
        return
    resolved = tx.resolve_alerts_by_prefix(
        agent_id=CONTROL_PLANE_SOURCE,
        kind=LOW_STOCK,
        alert_id_prefix=_low_stock_prefix(kitchen_id, ingredient),
        resolution=(
            f"{ingredient} back at {row['quantity']:g}, at or above the mark of"
            f" {row['low_water_mark']:g}"
        ),
        at=now,
    )
    audit.append(
        tx,
        at=now,
        actor_type=actor_type,
        actor_id=actor,
        action="stock.low_cleared",
        subject_type="ingredient",
        subject_id=f"{kitchen_id}/{ingredient}",
        kitchen_id=kitchen_id,
        details={"ingredient": ingredient, "alerts_resolved": resolved},
    )


def deliver(
    store: Store, kitchen_id: str, delivery: StockDelivery, *, now: float, actor: str
) -> dict[str, Any]:
    """Add a delivery to a kitchen's stock (audited); an ingredient new to the kitchen is
    tracked from now on. Stock back at its mark re-arms the low-stock alert."""
    with store.write() as tx:
        if tx.kitchen(kitchen_id) is None:
            raise NotFound(f"no kitchen {kitchen_id!r}")
        for line in delivery.lines:
            tx.add_stock(
                kitchen_id=kitchen_id,
                ingredient=line.ingredient,
                quantity=line.quantity,
                low_water_mark=line.low_water_mark,
                at=now,
            )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="stock.delivered",
            subject_type="kitchen",
            subject_id=kitchen_id,
            kitchen_id=kitchen_id,
            details={
                "note": delivery.note,
                "lines": [line.model_dump(mode="json") for line in delivery.lines],
            },
        )
        for ingredient in sorted({line.ingredient for line in delivery.lines}):
            _rearm_low_stock(tx, kitchen_id=kitchen_id, ingredient=ingredient, now=now, actor=actor)
        # A delivery below the mark (e.g. a new ingredient) is low from the start.
        raise_low_stock_alerts(
            tx,
            kitchen_id=kitchen_id,
            ingredients=sorted({line.ingredient for line in delivery.lines}),
            now=now,
        )
        return stock_view(tx, kitchen_id)
