"""Network faults on purpose: a TCP fault proxy for one link, on loopback only.

Put a :class:`FaultProxy` between an agent and the control plane (HTTP) or between devices and
the broker (MQTT), point the client at ``proxy.port``, and switch faults at run time:

====================  ============================================================================
mode                  what the two ends see
====================  ============================================================================
``pass``              every byte forwarded at once
``blackhole``         connections accepted and held open; nothing forwarded either way. Bytes
                      already sent stay queued (as TCP would keep retransmitting them) and flow
                      again when the mode changes back
``delay``             each chunk held ``delay_ms`` before it is forwarded, in each direction
``bandwidth``         each direction limited to ``bytes_per_s``
``reset``             every open connection and every new one closed with a TCP RST
                      (``SO_LINGER`` 0)
``half-open``         one direction (``direction="upstream"``: client to target, or
                      ``"downstream"``) stops forwarding; both sockets stay open
====================  ============================================================================

The proxy runs an asyncio loop in its own named thread; ``set_mode`` is safe from any thread and
returns once the new mode is in force (for ``reset``: once every open connection is reset).

>>> with FaultProxy("127.0.0.1", 0, "127.0.0.1", 8700) as proxy:  # doctest: +SKIP
...     proxy.set_mode("delay", delay_ms=200)
...     proxy.set_mode("blackhole")
...     proxy.set_mode("pass")
...     proxy.stats.connections_total
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal, cast

Mode = Literal["pass", "blackhole", "delay", "bandwidth", "reset", "half-open"]
Direction = Literal["upstream", "downstream"]

MODES: tuple[Mode, ...] = ("pass", "blackhole", "delay", "bandwidth", "reset", "half-open")
CHUNK = 16384


class ChaosError(RuntimeError):
    """A fault tool was asked for something it cannot do (a non-loopback address, a bad mode)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """The proxy's current fault: a mode and its parameters."""

    mode: Mode = "pass"
    delay_ms: float = 0.0
    bytes_per_s: float = 0.0
    direction: Direction = "downstream"

    def forwards(self, direction: Direction) -> bool:
        """Whether bytes travelling ``direction`` may be forwarded now."""
        if self.mode in ("blackhole", "reset"):
            return False
        return not (self.mode == "half-open" and direction == self.direction)


def make_fault(
    mode: str,
    *,
    delay_ms: float | None = None,
    bytes_per_s: float | None = None,
    direction: str | None = None,
) -> Fault:
    """Validate a mode and its parameters into a :class:`Fault`.

    >>> make_fault("delay", delay_ms=50).delay_ms
    50.0
    >>> make_fault("bandwidth")
    Traceback (most recent call last):
    ...
    simulators.chaos.ChaosError: mode 'bandwidth' needs bytes_per_s > 0
    """
    if mode not in MODES:
        raise ChaosError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    if mode == "delay" and not (delay_ms and delay_ms > 0):
        raise ChaosError("mode 'delay' needs delay_ms > 0")
    if mode == "bandwidth" and not (bytes_per_s and bytes_per_s > 0):
        raise ChaosError("mode 'bandwidth' needs bytes_per_s > 0")
    if direction not in (None, "upstream", "downstream"):
        raise ChaosError(f"direction must be 'upstream' or 'downstream', not {direction!r}")
    return Fault(
        mode=mode,
        delay_ms=float(delay_ms or 0.0),
        bytes_per_s=float(bytes_per_s or 0.0),
        direction=cast(Direction, direction or "downstream"),
    )


def parse_schedule(text: str) -> list[tuple[float, Fault]]:
    """``"0:pass,10:blackhole,30:delay=300"`` as ``(seconds, fault)`` in time order.

    >>> [(t, f.mode, f.delay_ms) for t, f in parse_schedule("0:pass,5:delay=250")]
    [(0.0, 'pass', 0.0), (5.0, 'delay', 250.0)]
    """
    steps = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        at, _, rest = item.partition(":")
        mode, _, value = rest.partition("=")
        try:
            at_s = float(at)
            number = float(value) if value and mode != "half-open" else None
        except ValueError:
            raise ChaosError(f"{item!r}: expected SECONDS:MODE[=NUMBER]") from None
        if value and mode not in ("delay", "bandwidth", "half-open"):
            raise ChaosError(f"{item!r}: mode {mode!r} takes no value")
        fault = make_fault(
            mode,
            delay_ms=number if mode == "delay" else None,
            bytes_per_s=number if mode == "bandwidth" else None,
            direction=value if mode == "half-open" else None,
        )
        steps.append((at_s, fault))
    if not steps:
        raise ChaosError("an empty fault schedule")
    return sorted(steps, key=lambda step: step[0])


@dataclass
class ProxyStats:
    """What went through the proxy since it started (a snapshot; see ``FaultProxy.stats``)."""

    connections_total: int = 0
    connections_open: int = 0
    connections_reset: int = 0
    upstream_failures: int = 0
    bytes_upstream: int = 0
    bytes_downstream: int = 0
    mode: Mode = "pass"


def require_loopback(host: str) -> str:
    """``host`` if it is a loopback address or ``localhost``; a fault proxy never listens on or
    forwards to anything else."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ChaosError(f"{host!r} is not a loopback address: the fault proxy works on loopback only")


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST: linger on, timeout 0, then abort (no FIN, no flush)."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    closed: bool = False

    def abort(self) -> None:
        self.closed = True
        for end in (self.client, self.upstream):
            if end is not None:
                end.transport.abort()


class FaultProxy:
    """A TCP proxy from ``listen_host:listen_port`` (0 picks a free port) to
    ``target_host:target_port`` whose faults switch at run time. See the module docstring."""

    def __init__(
        self,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        target_host: str = "127.0.0.1",
        target_port: int = 0,
        *,
        name: str | None = None,
    ) -> None:
        self.listen_host = require_loopback(listen_host)
        self.target_host = require_loopback(target_host)
        if not 0 < target_port < 65536:
            raise ChaosError(f"target port {target_port} is not a TCP port")
        self.target_port = target_port
        self._requested_port = listen_port
        self.port = 0
        self.name = name or f"fault-proxy:{target_port}"
        self._fault = Fault()
        self._stats = ProxyStats()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._changed: asyncio.Condition | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> FaultProxy:
        """Start the proxy's thread and listen; returns once ``port`` is bound."""
        if self._thread is not None:
            raise ChaosError(f"{self.name} is already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ChaosError(f"{self.name} did not start within {timeout}s")
        if self._startup_error is not None:
            self._thread.join(timeout)
            raise ChaosError(f"{self.name} could not listen: {self._startup_error}") from (
                self._startup_error
            )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, stop the loop and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------
    @property
    def fault(self) -> Fault:
        with self._lock:
            return self._fault

    @property
    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return replace(self._stats, mode=self._fault.mode)

    def set_mode(
        self,
        mode: str,
        *,
        delay_ms: float | None = None,
        bytes_per_s: float | None = None,
        direction: str | None = None,
        timeout: float = 5.0,
    ) -> Fault:
        """Switch to ``mode`` (see the module docstring) and return the fault now in force."""
        fault = make_fault(mode, delay_ms=delay_ms, bytes_per_s=bytes_per_s, direction=direction)
        return self.apply_fault(fault, timeout=timeout)

    def apply_fault(self, fault: Fault, *, timeout: float = 5.0) -> Fault:
        """Put ``fault`` (from :func:`make_fault` or :func:`parse_schedule`) in force."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise ChaosError(f"{self.name} is not running")
        asyncio.run_coroutine_threadsafe(self._apply(fault), loop).result(timeout)
        return fault

    @contextlib.contextmanager
    def fault_for_block(self, mode: str, **params: float | str) -> Iterator[Fault]:
        """``with proxy.fault_for_block("blackhole"):`` the fault holds inside the block only,
        then the proxy goes back to ``pass``."""
        fault = self.set_mode(mode, **params)  # type: ignore[arg-type]
        try:
            yield fault
        finally:
            if self._loop is not None and self._loop.is_running():
                self.set_mode("pass")

    # -- the loop's side -----------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except OSError as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(
                    asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True)
                )
            loop.close()

    async def _listen(self) -> None:
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(
            self._accept, self.listen_host, self._requested_port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        self._closing = True
        # A socket accepted in the last loop turn gets its transport in the next one; closing
        # the server in between leaks it (asyncio asserts in Server._attach). Let them land;
        # their handlers see _closing and abort at once.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            await self._close_link(link)
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        # One more turn so aborted transports run their connection_lost and close sockets.
        await asyncio.sleep(0)

    async def _apply(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault
        if fault.mode == "reset":
            for link in list(self._links):
                self._reset(link)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _resetting(self) -> bool:
        return self.fault.mode == "reset"

    def _reset(self, link: _Link) -> None:
        link.closed = True
        _rst(link.client)
        _rst(link.upstream)
        with self._lock:
            self._stats.connections_reset += 1

    async def _close_link(self, link: _Link) -> None:
        link.abort()
        self._links.discard(link)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _until_forwarding(self, link: _Link, direction: Direction | None) -> Fault | None:
        """Wait while the current fault holds bytes going ``direction`` (None: the upstream
        connection itself, held in a blackhole). None when the link was closed meanwhile."""
        assert self._changed is not None
        async with self._changed:
            while not link.closed:
                fault = self.fault
                if direction is None:
                    if fault.mode not in ("blackhole", "reset"):
                        return fault
                elif fault.forwards(direction):
                    return fault
                await self._changed.wait()
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(client=writer)
        with self._lock:
            self._stats.connections_total += 1
            self._stats.connections_open += 1
        self._links.add(link)
        try:
            if self._closing:
                return
            if self._resetting():
                self._reset(link)
                return
            if await self._until_forwarding(link, None) is None:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                with self._lock:
                    self._stats.upstream_failures += 1
                # The target is down: the client sees what it would see without the proxy.
                self._reset(link)
                return
            link.upstream = up_writer
            if link.closed or self._resetting():
                self._reset(link)
                return
            await asyncio.gather(
                self._pump(link, reader, up_writer, "upstream"),
                self._pump(link, up_reader, writer, "downstream"),
            )
        finally:
            self._links.discard(link)
            link.abort()
            with self._lock:
                self._stats.connections_open -= 1

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        """Forward one direction chunk by chunk under the fault in force for each chunk."""
        # Bandwidth: a slice of n bytes leaves no earlier than n / rate after the previous one.
        next_free = time.monotonic()
        try:
            while not link.closed:
                chunk = await reader.read(CHUNK)
                if await self._until_forwarding(link, direction) is None:
                    return
                if not chunk:
                    # Only this half is done; the other direction may still be talking.
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                fault = self.fault
                if fault.mode == "delay":
                    await asyncio.sleep(fault.delay_ms / 1000.0)
                    await self._send(link, writer, chunk, direction)
                elif fault.mode == "bandwidth":
                    # Small slices so a low rate trickles instead of arriving in bursts.
                    size = max(1, int(fault.bytes_per_s / 20))
                    for offset in range(0, len(chunk), size):
                        piece = chunk[offset : offset + size]
                        now = time.monotonic()
                        next_free = max(next_free, now) + len(piece) / fault.bytes_per_s
                        await asyncio.sleep(next_free - now)
                        if not await self._send(link, writer, piece, direction):
                            return
                else:
                    await self._send(link, writer, chunk, direction)
        except (ConnectionError, OSError):
            # One end went away: the whole link goes, as it would without the proxy.
            link.abort()

    async def _send(
        self, link: _Link, writer: asyncio.StreamWriter, data: bytes, direction: Direction
    ) -> bool:
        # The fault may have changed while the bytes were held (e.g. to a blackhole).
        if await self._until_forwarding(link, direction) is None:
            return False
        # Counted before the write so a peer that has the bytes always finds them counted.
        with self._lock:
            if direction == "upstream":
                self._stats.bytes_upstream += len(data)
            else:
                self._stats.bytes_downstream += len(data)
        writer.write(data)
        await writer.drain()
        return True
