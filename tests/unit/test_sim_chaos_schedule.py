"""Fault schedules for the proxy CLI, and fault validation (pure)."""

from __future__ import annotations

import pytest

from simulators.chaos import ChaosError, Fault, make_fault, parse_schedule, require_loopback


def test_schedule_is_parsed_in_time_order_with_its_values() -> None:
    """Steps come back sorted by time, each a validated fault."""
    steps = parse_schedule("30:half-open=upstream, 0:pass ,10:bandwidth=2000")
    assert [(t, f.mode) for t, f in steps] == [(0, "pass"), (10, "bandwidth"), (30, "half-open")]
    assert steps[1][1].bytes_per_s == 2000.0
    assert steps[2][1].direction == "upstream"


@pytest.mark.parametrize(
    "text",
    ["", "x:pass", "0:teleport", "0:blackhole=5", "0:delay", "0:delay=abc", "0:half-open=up"],
)
def test_bad_schedules_are_refused_with_a_chaos_error(text: str) -> None:
    """Unknown modes, missing or stray values and bad times are errors, not surprises."""
    with pytest.raises(ChaosError):
        parse_schedule(text)


def test_each_mode_says_which_directions_it_forwards() -> None:
    """pass/delay/bandwidth forward both ways, blackhole and reset none, half-open one."""
    assert Fault("pass").forwards("upstream") and Fault("delay", 5).forwards("downstream")
    assert not Fault("blackhole").forwards("upstream")
    assert not Fault("reset").forwards("downstream")
    half = make_fault("half-open", direction="upstream")
    assert not half.forwards("upstream") and half.forwards("downstream")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_are_allowed(host: str) -> None:
    """Any loopback address (or localhost) is accepted."""
    assert require_loopback(host) == host
