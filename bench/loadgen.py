"""A small closed-model HTTP/1.1 load generator on raw asyncio streams.

httpx costs more CPU per request than the server under test does, which on a 2-core machine
would measure the client. This client keeps one keep-alive connection per worker, writes
prebuilt requests and parses only the status line and Content-Length.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """Latencies of successful requests and counts by status."""

    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0

    def ok(self, accept: set[int]) -> int:
        return sum(n for status, n in self.statuses.items() if status in accept)

    def rate(self, accept: set[int]) -> float:
        return self.ok(accept) / self.duration_s

    def quantile(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _worker(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    deadline: float,
    result: LoadResult,
    counter: list[int],
    accept: set[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            counter[0] += 1
            request = make_request(counter[0])
            started = time.perf_counter()
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.statuses[status] += 1
            if status in accept:
                result.latencies_s.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _run(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    concurrency: int,
    seconds: float,
    accept: set[int],
) -> LoadResult:
    result = LoadResult(duration_s=seconds)
    counter = [0]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _worker(host, port, make_request, deadline, result, counter, accept)
            for _ in range(concurrency)
        )
    )
    result.duration_s = time.perf_counter() - started
    return result


def closed_loop(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    concurrency: int,
    seconds: float,
    accept: set[int],
) -> LoadResult:
    """Run ``concurrency`` workers back-to-back for ``seconds``; ``make_request(n)`` builds the
    n-th request (so each can carry a unique idempotency key)."""
    return asyncio.run(_run(host, port, make_request, concurrency, seconds, accept))


# --- Open model ------------------------------------------------------------------------------
# A closed loop slows down with the server it measures (a worker waits for its answer before
# sending the next request), so it can never overload anything. An open model sends on a
# schedule whatever the answers, the way independent clients arrive; overload protection is
# only visible under it.


def arrival_times(
    rate: float, seconds: float, *, poisson: bool = True, seed: int = 0
) -> list[float]:
    """Send offsets (seconds from the start) of ``rate`` requests/s for ``seconds``.

    Poisson arrivals (independent clients) by default, evenly spaced otherwise; the same seed
    gives the same schedule. The Poisson schedule has exactly ``rate x seconds`` arrivals,
    placed uniformly at random: a Poisson process given its count, so it keeps the bursts but
    not the count's own noise (about 1/sqrt(count)), which would otherwise move a goodput
    compared between two runs.

    >>> arrival_times(4, 1, poisson=False)
    [0.0, 0.25, 0.5, 0.75]
    >>> len(arrival_times(100, 2, seed=1))
    200
    """
    # A hair of slack so 200/s for 0.06 s is 12 requests despite binary floating point.
    count = int(rate * seconds + 1e-9) if rate > 0 and seconds > 0 else 0
    if not poisson:
        return [n / rate for n in range(count)]
    draw = random.Random(seed)
    return sorted(draw.uniform(0, seconds) for _ in range(count))


@dataclass
class OpenLoadResult:
    """What one open-model run offered and what came back.

    ``outcomes`` counts every scheduled request once: ``"<status>"`` for an answer (with
    ``"<status>-no-retry-after"`` for a 429/503 without the header), ``"timeout"`` when no
    answer came within the timeout, ``"transport-error:<exception>"`` for a broken connection and
    ``"not-sent"`` when the generator's own in-flight bound was full at the send time.
    """

    rate: float
    duration_s: float
    offered: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Latencies (from the *scheduled* send time, so a late generator is not hidden) of
    #: answers that were not refusals (anything but 429 and 503).
    admitted_latencies_s: list[float] = field(default_factory=list)
    #: Answers with ``good_status`` within ``deadline_s`` of their scheduled time.
    good: int = 0
    #: How late the generator sent, worst case: CPU contention on the load machine.
    max_send_lag_s: float = 0.0
    peak_in_flight: int = 0

    @property
    def goodput(self) -> float:
        return self.good / self.duration_s

    @staticmethod
    def combined(loads: list[OpenLoadResult]) -> OpenLoadResult:
        """Several runs at one rate as one (e.g. the two halves of an A-B-B-A design).

        >>> a = OpenLoadResult(10, 1.0, 10, Counter({"201": 10}), [0.01], good=10)
        >>> b = OpenLoadResult(10, 1.0, 12, Counter({"201": 11, "timeout": 1}), [0.02], good=8)
        >>> both = OpenLoadResult.combined([a, b])
        >>> both.offered, both.outcomes["201"], both.goodput, both.admitted_latencies_s
        (22, 21, 9.0, [0.01, 0.02])
        """
        total = OpenLoadResult(rate=loads[0].rate, duration_s=0.0)
        for load in loads:
            total.duration_s += load.duration_s
            total.offered += load.offered
            total.outcomes.update(load.outcomes)
            total.admitted_latencies_s += load.admitted_latencies_s
            total.good += load.good
            total.max_send_lag_s = max(total.max_send_lag_s, load.max_send_lag_s)
            total.peak_in_flight = max(total.peak_in_flight, load.peak_in_flight)
        return total

    def admitted_quantile(self, q: float) -> float:
        return _quantile(self.admitted_latencies_s, q)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether a ``Retry-After`` header came; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    retry_after = False
    for line in head.split(b"\r\n")[1:]:
        name = line[:15].lower()
        if name == b"content-length:":
            length = int(line[15:])
        elif name.startswith(b"retry-after:") and line[12:].strip():
            retry_after = True
    if length:
        await reader.readexactly(length)
    return status, retry_after


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
#: Idle connections older than this are closed rather than reused: uvicorn closes keep-alive
#: connections idle for 5 s, and a request written as it does so is lost in the race.
_MAX_IDLE_S = 2.0


class _Connections:
    """Idle keep-alive connections, most recent first; one request at a time on each."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[float, _Connection]] = []

    async def take(self) -> _Connection:
        now = time.perf_counter()
        while self.idle:
            since, conn = self.idle.pop()
            if now - since < _MAX_IDLE_S:
                return conn
            conn[1].close()
        return await asyncio.open_connection(self.host, self.port)

    def give_back(self, conn: _Connection) -> None:
        self.idle.append((time.perf_counter(), conn))

    def close(self) -> None:
        for _, (_, writer) in self.idle:
            writer.close()
        self.idle.clear()


async def _one(
    pool: _Connections,
    request: bytes,
    scheduled: float,
    result: OpenLoadResult,
    *,
    timeout_s: float,
    deadline_s: float,
    good_status: int,
) -> None:
    conn = None
    try:
        async with asyncio.timeout(timeout_s - (time.perf_counter() - scheduled)):
            conn = await pool.take()
            conn[1].write(request)
            status, retry_after = await _read_head(conn[0])
    except TimeoutError:
        result.outcomes["timeout"] += 1
        if conn is not None:
            conn[1].close()  # an answer may still be coming on it: never reuse
        return
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
        result.outcomes[f"transport-error:{type(exc).__name__}"] += 1
        if conn is not None:
            conn[1].close()
        return
    latency = time.perf_counter() - scheduled
    pool.give_back(conn)
    refused = status in (429, 503)
    result.outcomes[f"{status}" if retry_after or not refused else f"{status}-no-retry-after"] += 1
    if not refused:
        result.admitted_latencies_s.append(latency)
    if status == good_status and latency <= deadline_s:
        result.good += 1


async def _open_run(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    schedule: list[float],
    *,
    rate: float,
    seconds: float,
    max_in_flight: int,
    timeout_s: float,
    deadline_s: float,
    good_status: int,
) -> OpenLoadResult:
    result = OpenLoadResult(rate=rate, duration_s=seconds, offered=len(schedule))
    pool = _Connections(host, port)
    running: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    try:
        for n, offset in enumerate(schedule):
            scheduled = started + offset
            wait = scheduled - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            result.max_send_lag_s = max(result.max_send_lag_s, time.perf_counter() - scheduled)
            if len(running) >= max_in_flight:
                result.outcomes["not-sent"] += 1
                continue
            task = asyncio.create_task(
                _one(
                    pool,
                    make_request(n),
                    scheduled,
                    result,
                    timeout_s=timeout_s,
                    deadline_s=deadline_s,
                    good_status=good_status,
                )
            )
            running.add(task)
            task.add_done_callback(running.discard)
            result.peak_in_flight = max(result.peak_in_flight, len(running))
        if running:
            await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
        pool.close()
    return result


def open_loop(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    rate: float,
    seconds: float,
    max_in_flight: int = 512,
    timeout_s: float = 2.0,
    deadline_s: float = 1.0,
    good_status: int = 201,
    poisson: bool = True,
    seed: int = 0,
) -> OpenLoadResult:
    """Send ``rate`` requests/s for ``seconds`` on a schedule, whatever the answers.

    ``make_request(n)`` builds the n-th request. At most ``max_in_flight`` requests are
    outstanding (so the generator cannot collapse itself); a request scheduled while the bound
    is full is counted ``not-sent``, as a failure. A request without an answer within
    ``timeout_s`` of its scheduled time is a ``timeout``; a ``good_status`` answer within
    ``deadline_s`` counts towards goodput.
    """
    schedule = arrival_times(rate, seconds, poisson=poisson, seed=seed)
    return asyncio.run(
        _open_run(
            host,
            port,
            make_request,
            schedule,
            rate=rate,
            seconds=seconds,
            max_in_flight=max_in_flight,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            good_status=good_status,
        )
    )
