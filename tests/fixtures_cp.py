"""Fixtures of the cp tests (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
