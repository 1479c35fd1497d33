"""Backpressure as operators see it, and their overrides (stored, so they survive a restart).

The levels themselves are the control loop's (:mod:`control_plane.control_loop`): it publishes
each scope's decision to :class:`~control_plane.planning_state.PlanningState` and stores when a
scope entered its level. An override pins a scope (``"*"`` for the whole fleet, or a kitchen)
at a level until it is removed or its ``until`` passes; the loop applies it at its next tick.
Setting and removing one are audited.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from control_plane import audit
from control_plane.audit import iso
from control_plane.errors import NotFound, Unprocessable
from control_plane.planning.backpressure import GLOBAL, Decision
from control_plane.planning_state import PlanningState
from control_plane.queries import Reader
from control_plane.store import Store


def _override_view(row: sqlite3.Row | None, *, now: float) -> dict[str, Any] | None:
    if row is None or (row["until"] is not None and row["until"] <= now):
        return None
    return {
        "level": row["level"],
        "actor": row["actor"],
        "reason": row["reason"],
        "until": iso(row["until"]),
        "created_at": iso(row["created_at"]),
    }


def _scope_view(
    scope: str,
    decision: Decision | None,
    level_row: sqlite3.Row | None,
    override_row: sqlite3.Row | None,
    *,
    now: float,
) -> dict[str, Any]:
    if decision is not None:
        level, why = decision.level, decision.why
        actions = decision.actions
        shown_actions: dict[str, Any] = {
            "reject_priorities": sorted(actions.reject_priorities),
            "promise_delay_s": actions.promise_delay_s,
            "retry_after_s": actions.retry_after_s,
            "accept_new_work": actions.accept_new_work,
        }
    else:
        level = "normal" if level_row is None else str(level_row["level"])
        why = "not evaluated since the control plane started"
        shown_actions = {
            "reject_priorities": [],
            "promise_delay_s": 0.0,
            "retry_after_s": None,
            "accept_new_work": True,
        }
    return {
        "scope": scope,
        "kitchen_id": None if scope == GLOBAL else scope,
        "level": level,
        "why": why,
        "since": None if level_row is None else iso(level_row["since"]),
        "actions": shown_actions,
        "override": _override_view(override_row, now=now),
    }


def backpressure_view(reader: Reader, planning: PlanningState, *, now: float) -> dict[str, Any]:
    """Every scope (the fleet first, then each kitchen): level, why, since, override."""
    decisions = planning.decisions()
    levels = {str(row["scope"]): row for row in reader.backpressure_levels()}
    overrides = {str(row["scope"]): row for row in reader.backpressure_overrides()}
    scopes = [GLOBAL, *(str(row["id"]) for row in reader.kitchens())]
    return {
        "evaluated": bool(decisions),
        "scopes": [
            _scope_view(
                scope, decisions.get(scope), levels.get(scope), overrides.get(scope), now=now
            )
            for scope in scopes
        ],
    }


def scope_view(
    reader: Reader, planning: PlanningState, scope: str, *, now: float
) -> dict[str, Any]:
    """One scope as :func:`backpressure_view` shows it; 404 for an unknown one."""
    _check_scope(reader, scope)
    view = backpressure_view(reader, planning, now=now)
    return next(s for s in view["scopes"] if s["scope"] == scope)


def _check_scope(reader: Reader, scope: str) -> None:
    if scope != GLOBAL and reader.kitchen(scope) is None:
        raise NotFound(f"no backpressure scope {scope!r}: use '*' (the fleet) or a kitchen id")


def set_override(
    store: Store,
    scope: str,
    *,
    level: str,
    reason: str,
    until: float | None,
    now: float,
    actor: str,
) -> None:
    """Pin ``scope`` at ``level`` (until ``until``, or until removed); audited."""
    if until is not None and until <= now:
        raise Unprocessable("an override's 'until' must be in the future", reason="until_passed")
    with store.write() as tx:
        _check_scope(tx, scope)
        previous = next((r for r in tx.backpressure_overrides() if r["scope"] == scope), None)
        tx.upsert_backpressure_override(
            scope=scope, level=level, actor=actor, reason=reason, until=until, created_at=now
        )
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="backpressure.override_set",
            subject_type="backpressure",
            subject_id=scope,
            kitchen_id=None if scope == GLOBAL else scope,
            reason=reason,
            details={
                "level": level,
                "until": until,
                "previous_level": None if previous is None else previous["level"],
            },
        )


def clear_override(store: Store, scope: str, *, now: float, actor: str) -> None:
    """Remove ``scope``'s override (404 when it has none); audited."""
    with store.write() as tx:
        _check_scope(tx, scope)
        previous = next((r for r in tx.backpressure_overrides() if r["scope"] == scope), None)
        if previous is None:
            raise NotFound(f"backpressure scope {scope!r} has no override")
        tx.delete_backpressure_override(scope=scope)
        audit.append(
            tx,
            at=now,
            actor_type="operator",
            actor_id=actor,
            action="backpressure.override_cleared",
            subject_type="backpressure",
            subject_id=scope,
            kitchen_id=None if scope == GLOBAL else scope,
            reason=str(previous["reason"]),
            details={"level": previous["level"], "until": previous["until"]},
        )
