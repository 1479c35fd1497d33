"""The TCP fault proxy against a real echo server: each fault as the two ends see it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from simulators.chaos import ChaosError, FaultProxy
from simulators.processes import port_open, wait_until
from tests.fixtures_sim import EchoServer


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data.extend(chunk)
    return bytes(data)


def nothing_arrives(sock: socket.socket, within: float = 0.3) -> bool:
    sock.settimeout(within)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_pass_mode_forwards_both_directions(fault_proxy: FaultProxy) -> None:
    """In pass mode bytes reach the target and its answer comes back unchanged."""
    with connect(fault_proxy) as sock:
        sock.sendall(b"hello kitchen")
        assert recv_exactly(sock, 13) == b"hello kitchen"
    stats = fault_proxy.stats
    assert stats.connections_total == 1
    assert stats.bytes_upstream == 13
    assert stats.bytes_downstream == 13


def test_delay_holds_each_chunk_in_each_direction(fault_proxy: FaultProxy) -> None:
    """With delay_ms=150 a round trip takes at least 300 ms (150 ms each way)."""
    fault_proxy.set_mode("delay", delay_ms=150)
    with connect(fault_proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        assert time.monotonic() - started >= 0.3


def test_bandwidth_limit_caps_throughput(fault_proxy: FaultProxy) -> None:
    """At 20,000 bytes/s, 10,000 bytes take at least half a second to come back."""
    fault_proxy.set_mode("bandwidth", bytes_per_s=20_000)
    payload = bytes(range(256)) * 40  # 10,240 bytes
    with connect(fault_proxy) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert time.monotonic() - started >= 0.5


def test_blackhole_holds_connection_and_forwards_nothing(
    fault_proxy: FaultProxy, echo_server: EchoServer
) -> None:
    """A blackhole keeps the connection open, delivers nothing, and resumes when lifted."""
    with connect(fault_proxy) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 1) == b"a"
        fault_proxy.set_mode("blackhole")
        sock.sendall(b"held")
        assert nothing_arrives(sock)
        assert echo_server.received_bytes() == 1
        fault_proxy.set_mode("pass")
        assert recv_exactly(sock, 4) == b"held"


def test_blackhole_accepts_new_connections_without_reaching_target(
    fault_proxy: FaultProxy, echo_server: EchoServer
) -> None:
    """A connection made during a blackhole is accepted and held, and reaches the target later."""
    fault_proxy.set_mode("blackhole")
    with connect(fault_proxy) as sock:
        sock.sendall(b"early")
        assert nothing_arrives(sock)
        assert echo_server.received_bytes() == 0
        fault_proxy.set_mode("pass")
        assert recv_exactly(sock, 5) == b"early"


def test_reset_sends_rst_to_open_connections(fault_proxy: FaultProxy) -> None:
    """Switching to reset aborts an open connection with a TCP RST (ECONNRESET)."""
    with connect(fault_proxy) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        fault_proxy.set_mode("reset")
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    assert fault_proxy.stats.connections_reset == 1


def test_reset_mode_resets_new_connections(fault_proxy: FaultProxy) -> None:
    """While in reset mode every new connection is reset right after it is accepted."""
    fault_proxy.set_mode("reset")
    # The RST may arrive while connecting or on the first read, as with a real peer.
    with pytest.raises(ConnectionResetError), connect(fault_proxy) as sock:
        sock.sendall(b"x")
        sock.recv(1)
    fault_proxy.set_mode("pass")
    with connect(fault_proxy) as sock:
        sock.sendall(b"back")
        assert recv_exactly(sock, 4) == b"back"


def test_half_open_downstream_reaches_target_but_answers_are_held(
    fault_proxy: FaultProxy, echo_server: EchoServer
) -> None:
    """Half-open (downstream) delivers to the target while the client hears nothing."""
    with connect(fault_proxy) as sock:
        fault_proxy.set_mode("half-open", direction="downstream")
        sock.sendall(b"order")
        wait_until(lambda: echo_server.received_bytes() == 5, timeout=5, what="target got it")
        assert nothing_arrives(sock)
        fault_proxy.set_mode("pass")
        assert recv_exactly(sock, 5) == b"order"


def test_half_open_upstream_holds_requests(
    fault_proxy: FaultProxy, echo_server: EchoServer
) -> None:
    """Half-open (upstream) keeps the socket open but nothing reaches the target."""
    with connect(fault_proxy) as sock:
        fault_proxy.set_mode("half-open", direction="upstream")
        sock.sendall(b"lost?")
        assert nothing_arrives(sock)
        assert echo_server.received_bytes() == 0
        fault_proxy.set_mode("pass")
        assert recv_exactly(sock, 5) == b"lost?"


def test_target_down_resets_the_client() -> None:
    """When the target refuses, the client is reset and the failure is counted."""
    # Bound but not listening: connections are refused, and no one else can take the port.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        refuse_connections_to(int(dead.getsockname()[1]))


def refuse_connections_to(dead_port: int) -> None:
    with FaultProxy("127.0.0.1", 0, "127.0.0.1", dead_port) as proxy:
        with pytest.raises(ConnectionResetError), connect(proxy) as sock:
            sock.sendall(b"x")
            sock.recv(1)
        wait_until(lambda: proxy.stats.upstream_failures == 1, timeout=5, what="failure count")


def test_concurrent_connections_are_forwarded_independently(fault_proxy: FaultProxy) -> None:
    """Several clients at once each get their own bytes back."""
    results: dict[int, bytes] = {}

    def client(n: int) -> None:
        with connect(fault_proxy) as sock:
            message = f"client-{n}".encode() * 100
            sock.sendall(message)
            results[n] = recv_exactly(sock, len(message))

    threads = [threading.Thread(target=client, args=(n,), name=f"c{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: f"client-{n}".encode() * 100 for n in range(8)}
    wait_until(lambda: fault_proxy.stats.connections_open == 0, timeout=5, what="all closed")


def test_stop_closes_listener_and_joins_its_thread(echo_server: EchoServer) -> None:
    """After stop() the port is closed and the proxy's named thread is gone."""
    proxy = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo_server.port, name="proxy-under-test")
    proxy.start()
    held = connect(proxy)
    port = proxy.port
    proxy.stop()
    held.close()
    assert not port_open("127.0.0.1", port)
    assert "proxy-under-test" not in {t.name for t in threading.enumerate()}


def test_non_loopback_addresses_are_refused() -> None:
    """The proxy never listens on or forwards to anything but loopback."""
    with pytest.raises(ChaosError, match="loopback"):
        FaultProxy("0.0.0.0", 0, "127.0.0.1", 80)
    with pytest.raises(ChaosError, match="loopback"):
        FaultProxy("127.0.0.1", 0, "10.0.0.1", 80)


def test_unknown_mode_and_missing_parameters_are_refused(fault_proxy: FaultProxy) -> None:
    """set_mode validates: unknown modes and a delay without delay_ms are errors."""
    with pytest.raises(ChaosError, match="unknown mode"):
        fault_proxy.set_mode("teleport")
    with pytest.raises(ChaosError, match="delay_ms"):
        fault_proxy.set_mode("delay")
    assert fault_proxy.fault.mode == "pass"


def test_fault_for_block_lifts_the_fault_when_the_block_ends(fault_proxy: FaultProxy) -> None:
    """Inside fault_for_block('blackhole') nothing flows; after it, held bytes arrive."""
    with connect(fault_proxy) as sock:
        with fault_proxy.fault_for_block("blackhole"):
            sock.sendall(b"wait")
            assert nothing_arrives(sock)
        assert fault_proxy.fault.mode == "pass"
        assert recv_exactly(sock, 4) == b"wait"
