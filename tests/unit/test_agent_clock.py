"""The system clock (deadlines keep counting during suspend) and the data-dir instance lock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.agent import lock_data_dir
from edge_agent.clock import SystemClock
from edge_agent.errors import AlreadyRunning


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux only")
def test_the_deadline_clock_is_clock_boottime_where_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CLOCK_MONOTONIC stops while suspended; the agent reads CLOCK_BOOTTIME instead."""
    real = time.clock_gettime

    def fake(clock_id: int) -> float:
        return 1e9 if clock_id == time.CLOCK_BOOTTIME else real(clock_id)

    monkeypatch.setattr(time, "clock_gettime", fake)
    assert SystemClock().monotonic() == 1e9


def test_a_second_agent_on_the_same_data_dir_is_refused_clearly(tmp_path: Path) -> None:
    """The instance lock: the second taker gets AlreadyRunning naming the directory."""
    first = lock_data_dir(tmp_path)
    try:
        with pytest.raises(AlreadyRunning, match="already running on"):
            lock_data_dir(tmp_path)
    finally:
        first.close()
    lock_data_dir(tmp_path).close()  # free again once the first holder is gone
