"""The overload benchmark's pure parts and its open-model load generator."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.loadgen import OpenLoadResult, arrival_times, build_request, open_loop
from bench.overload import (
    Step,
    compliance,
    confirm_sustainable,
    is_compliant,
    is_sustainable,
    search_sustainable,
)


@settings(max_examples=50, deadline=None)
@given(st.floats(1, 2000), st.floats(0.1, 5), st.integers(0, 1000))
def test_poisson_arrivals_are_sorted_within_the_run_and_exactly_the_rate(
    rate: float, seconds: float, seed: int
) -> None:
    """Send times increase, stay within the run, and number rate x seconds (rounded down)."""
    times = arrival_times(rate, seconds, seed=seed)
    assert times == sorted(times)
    assert all(0 <= t <= seconds for t in times)
    assert len(times) == int(rate * seconds + 1e-9)


def test_poisson_arrivals_come_in_bursts() -> None:
    """Unlike a fixed interval, some gaps are far shorter and some far longer than 1 / rate."""
    times = arrival_times(100, 10, seed=3)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) < 0.001
    assert max(gaps) > 0.04


def test_the_same_seed_gives_the_same_schedule() -> None:
    """A run can be repeated arrival for arrival."""
    assert arrival_times(50, 2, seed=7) == arrival_times(50, 2, seed=7)
    assert arrival_times(50, 2, seed=7) != arrival_times(50, 2, seed=8)


def test_fixed_interval_arrivals_are_evenly_spaced() -> None:
    """Without Poisson, requests go out every 1 / rate seconds."""
    assert arrival_times(5, 1, poisson=False) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert arrival_times(0, 1) == []


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        ("201", None),
        ("200", None),
        ("503", True),
        ("429", True),
        ("503-no-retry-after", False),
        ("429-no-retry-after", False),
        ("500", False),
        ("502", False),
        ("422", False),
        ("409", False),
        ("timeout", False),
        ("transport-error:ConnectionResetError", False),
        ("not-sent", False),
    ],
)
def test_only_429_and_503_with_retry_after_are_compliant_refusals(
    outcome: str, verdict: bool | None
) -> None:
    """Successes are not refusals; 429/503 + Retry-After comply; anything else violates."""
    assert is_compliant(outcome) is verdict


def test_compliance_counts_refusals_and_violations_apart_from_successes() -> None:
    """The share is compliant refusals over all non-successes, violations listed by kind."""
    verdict = compliance(Counter({"201": 500, "503": 95, "429": 3, "timeout": 1, "500": 1}))
    assert (verdict.compliant, verdict.violations) == (98, 2)
    assert verdict.violation_kinds == {"500": 1, "timeout": 1}
    assert verdict.share == pytest.approx(0.98)
    assert compliance(Counter({"201": 10})).share == 1.0


def test_a_step_is_sustainable_only_with_full_goodput_and_a_near_unloaded_median() -> None:
    """Goodput within 3 % of the offered rate and a median within 2x unloaded."""
    assert is_sustainable(Step(100, 97.5, 0.020), unloaded_p50_s=0.010)
    assert not is_sustainable(Step(100, 96.0, 0.010), unloaded_p50_s=0.010)
    assert not is_sustainable(Step(100, 100.0, 0.021), unloaded_p50_s=0.010)


def server_with_capacity(
    capacity: float,
) -> tuple[dict[float, Step], Callable[[float], Step]]:
    """A server that answers everything up to ``capacity`` per second, fast; beyond it the
    goodput is the capacity and the p99 explodes."""
    tried: dict[float, Step] = {}

    def try_rate(rate: float) -> Step:
        step = Step(rate, min(rate, capacity), 0.010 if rate <= capacity else 0.5)
        tried[rate] = step
        return step

    return tried, try_rate


@pytest.mark.parametrize("capacity", [45.0, 100.0, 150.0, 333.0])
def test_the_search_finds_a_sustainable_rate_near_the_capacity(capacity: float) -> None:
    """The rate found is sustainable and within one growth step below the capacity."""
    tried, try_rate = server_with_capacity(capacity)
    rate, steps = search_sustainable(try_rate, 0.010, start=40, growth=1.4, max_steps=10)
    assert rate <= capacity
    assert rate > capacity / 1.4
    assert {s.rate for s in steps} == set(tried)


def test_one_unlucky_step_does_not_end_the_search() -> None:
    """A rate whose first measurement caught a latency spike is measured again and passes."""
    spiked: set[float] = set()

    def try_rate(rate: float) -> Step:
        if rate == 80.0 and rate not in spiked:
            spiked.add(rate)
            return Step(rate, rate, 1.0)
        return Step(rate, min(rate, 150.0), 0.010 if rate <= 150 else 0.5)

    rate, steps = search_sustainable(try_rate, 0.010, start=40, growth=2, max_steps=10)
    assert rate == 113.1  # 40, 80 (twice), 160 (twice, over capacity), then sqrt(80 x 160)
    assert [s.rate for s in steps][:4] == [40.0, 80.0, 80.0, 160.0]


def test_the_search_stops_at_its_step_budget() -> None:
    """With too few steps to reach the capacity, the last sustainable rate tried is kept."""
    _, try_rate = server_with_capacity(10_000.0)
    rate, steps = search_sustainable(try_rate, 0.010, start=40, growth=2, max_steps=3)
    assert rate == 160
    assert len(steps) == 3


def test_the_search_reports_its_start_when_nothing_is_sustainable() -> None:
    """A server that cannot sustain the start rate gives the start rate, with both tries."""
    _, try_rate = server_with_capacity(10.0)
    rate, steps = search_sustainable(try_rate, 0.010, start=40)
    assert rate == 40
    assert [s.rate for s in steps] == [40.0, 40.0]


def test_a_rate_that_still_holds_is_confirmed_with_one_measurement() -> None:
    """The rate found is measured once more and kept when it is still sustainable."""
    _, try_rate = server_with_capacity(100.0)
    rate, steps = confirm_sustainable(try_rate, 0.010, 90.0)
    assert (rate, [s.rate for s in steps]) == (90.0, [90.0])


def test_a_rate_that_no_longer_holds_is_stepped_down() -> None:
    """A server that got slower since the search is met one growth step lower, or two; each
    rate fails only when measured twice."""
    _, try_rate = server_with_capacity(50.0)
    rate, steps = confirm_sustainable(try_rate, 0.010, 90.0)
    assert rate == 45.9
    assert [s.rate for s in steps] == [90.0, 90.0, 64.3, 64.3, 45.9]


# --- The open-model generator against a scripted server ------------------------------------


@pytest.fixture
def scripted_server() -> Iterator[tuple[str, int, list[int]]]:
    """A loopback HTTP/1.1 server: path /ok answers 201, /busy 503 + Retry-After, /bare 503
    without it, /slow never answers; the numbers of the requests received are recorded."""
    seen: list[int] = []
    ready = threading.Event()
    address: list[tuple[str, int]] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    handlers: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                seen.append(int(path.rsplit("/", 1)[1]))
                kind = path.split("/")[1]
                if kind == "slow":
                    await stop.wait()
                    return
                status, extra = {
                    "ok": ("201 Created", ""),
                    "busy": ("503 Service Unavailable", "Retry-After: 1\r\n"),
                    "bare": ("503 Service Unavailable", ""),
                }[kind]
                writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: 2\r\n\r\n{{}}".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        address.append(server.sockets[0].getsockname()[:2])
        ready.set()
        await stop.wait()
        server.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="scripted")
    thread.start()
    assert ready.wait(5)
    host, port = address[0]
    try:
        yield host, port, seen
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


def run_script(
    host: str, port: int, kinds: list[str], *, timeout_s: float, max_in_flight: int = 512
) -> OpenLoadResult:
    """One request per kind, 5 ms apart."""

    def request(n: int) -> bytes:
        return build_request("GET", f"/{kinds[n]}/{n}", f"{host}:{port}", {})

    return open_loop(
        host,
        port,
        request,
        rate=200,
        seconds=len(kinds) / 200,
        poisson=False,
        timeout_s=timeout_s,
        max_in_flight=max_in_flight,
    )


def test_the_generator_counts_every_outcome_and_goodput(
    scripted_server: tuple[str, int, list[int]],
) -> None:
    """201s within the deadline are goodput; refusals with and without Retry-After and
    unanswered requests are told apart; refusals are not admitted latencies."""
    host, port, _ = scripted_server
    kinds = ["ok"] * 6 + ["busy"] * 3 + ["bare"] * 2 + ["slow"]
    load = run_script(host, port, kinds, timeout_s=0.3)
    assert load.offered == 12
    assert load.outcomes == Counter({"201": 6, "503": 3, "503-no-retry-after": 2, "timeout": 1})
    assert load.good == 6
    assert len(load.admitted_latencies_s) == 6


def test_the_generator_keeps_sending_while_answers_are_outstanding(
    scripted_server: tuple[str, int, list[int]],
) -> None:
    """Open model: requests after an unanswered one still go out on schedule."""
    host, port, seen = scripted_server
    kinds = ["slow", "slow"] + ["ok"] * 8
    load = run_script(host, port, kinds, timeout_s=0.5)
    assert sorted(seen) == list(range(10))
    assert load.outcomes == Counter({"201": 8, "timeout": 2})


def test_the_in_flight_bound_counts_unsent_requests_as_failures(
    scripted_server: tuple[str, int, list[int]],
) -> None:
    """With the bound full of unanswered requests, the next ones are not sent but counted."""
    host, port, seen = scripted_server
    load = run_script(host, port, ["slow"] * 5, timeout_s=0.3, max_in_flight=2)
    assert load.outcomes == Counter({"timeout": 2, "not-sent": 3})
    assert sorted(seen) == [0, 1]
