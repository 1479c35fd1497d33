"""Fixtures of the sim tests (registered in tests/conftest.py): an echo server for the fault
proxy and a running fault proxy in front of it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from simulators.chaos import FaultProxy


@dataclass
class EchoServer:
    """A threaded TCP echo server on loopback that records what it received."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    lock: threading.Lock = field(default_factory=threading.Lock)
    conns: list[socket.socket] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def received_bytes(self) -> int:
        with self.lock:
            return len(self.received)

    def serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            worker = threading.Thread(target=self._echo, args=(conn,), name="echo-conn")
            self.threads.append(worker)
            worker.start()

    def _echo(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                with self.lock:
                    self.received.extend(data)
                conn.sendall(data)

    def close(self) -> None:
        self.closing.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would not on Linux.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in self.threads:
            worker.join(5)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    """A real TCP echo server on a free loopback port."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = EchoServer(sock)
    acceptor = threading.Thread(target=server.serve, name="echo-accept")
    acceptor.start()
    try:
        yield server
    finally:
        server.close()
        acceptor.join(5)


@pytest.fixture
def fault_proxy(echo_server: EchoServer) -> Iterator[FaultProxy]:
    """A fault proxy in ``pass`` mode in front of the echo server."""
    with FaultProxy("127.0.0.1", 0, "127.0.0.1", echo_server.port) as proxy:
        yield proxy
