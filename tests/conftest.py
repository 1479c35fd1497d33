"""Fixtures for real local services. Each is stopped by PID when its test ends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Broker
from tests.harness import ControlPlane

# Area-specific fixtures live in their own modules so that work on one area does not touch another.
pytest_plugins = [
    "tests.fixtures_agent",
    "tests.fixtures_cp",
    "tests.fixtures_sim",
    "tests.fixtures_planning",
]


def chaos_count(default: int) -> int:
    """Trial count of a soak test: small in CI, ``make chaos`` sets BRIGADE_CHAOS_COUNT."""
    return int(os.environ.get("BRIGADE_CHAOS_COUNT", default))


def soak_timeout(*, default: int, per_trial_s: float) -> float:
    """A soak test's time limit for its :func:`chaos_count` trials: the suite's 120 s covers
    the few trials CI runs, and ``make chaos`` (hundreds) gets ``per_trial_s`` for each, so
    the limit still catches a hang without failing a long soak for being long."""
    return max(120.0, 60.0 + per_trial_s * chaos_count(default))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port; ``broker.restart()`` restarts it mid-test."""
    instance = Broker(tmp_path / "broker").start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A real ``brigade serve`` (uvicorn) on a free loopback port, with its own SQLite file."""
    server = ControlPlane(tmp_path / "cp").start()
    try:
        yield server
    finally:
        server.stop()
