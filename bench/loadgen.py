"""A small closed-model HTTP/1.1 load generator on raw asyncio streams.

httpx costs more CPU per request than the server under test does, which on a 2-core machine
would measure the client. This client keeps one keep-alive connection per worker, writes
prebuilt requests and parses only the status line and Content-Length.
"""

from __future__ import annotations

import asyncio
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
