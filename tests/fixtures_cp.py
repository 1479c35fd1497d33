"""Fixtures of the cp tests (registered in tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control_plane.migrations import MIGRATIONS
from control_plane.store import _statements
from tests.harness import ControlPlane

#: Starts a control plane with settings (``BRIGADE_*`` environment variables), e.g.
#: ``start_control_plane(agent_unreachable_after_s=1)``.
StartControlPlane = Callable[..., ControlPlane]


def _configured(root: Path, settings: dict[str, object]) -> ControlPlane:
    server = ControlPlane(root)
    server.process.env.update({f"BRIGADE_{k.upper()}": str(v) for k, v in settings.items()})
    return server


@pytest.fixture
def start_control_plane(tmp_path: Path) -> Iterator[StartControlPlane]:
    """Start real ``brigade serve`` processes with given settings; all stopped at the end."""
    started: list[ControlPlane] = []

    def start(**settings: object) -> ControlPlane:
        server = _configured(tmp_path / f"cp-{len(started)}", settings)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def shared_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real ``brigade serve`` for a whole module of read-mostly tests."""
    server = ControlPlane(tmp_path_factory.mktemp("shared-cp")).start()
    try:
        yield server
    finally:
        server.stop()


def store_before(path: Path, migration: str) -> sqlite3.Connection:
    """A store file at ``path`` as a release before ``migration`` left it (every earlier
    migration applied), open in autocommit for the test to add that release's rows; close
    it, and ``Store.open(path)`` applies the rest."""
    names = [name for name, _ in MIGRATIONS]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, script in MIGRATIONS[: names.index(migration)]:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, 0.0))
    return conn
