"""`brigade-sim proxy` as an operator runs it: a real process in front of a real echo server."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from simulators.processes import ManagedProcess, wait_until
from simulators.services import console_script
from tests.fixtures_sim import EchoServer


def test_proxy_command_forwards_then_blackholes_on_schedule(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """It prints its port, forwards in pass mode, and applies the scheduled blackhole."""
    log = tmp_path / "proxy.log"
    proxy = ManagedProcess(
        "proxy",
        [
            console_script("brigade-sim"),
            "proxy",
            "--target",
            f"127.0.0.1:{echo_server.port}",
            "--schedule",
            "0:pass,1.5:blackhole",
        ],
        log_path=log,
        grace=5,
    ).start()
    try:
        wait_until(lambda: "fault proxy" in log.read_text(), timeout=15, what="proxy start")
        port = int(re.search(r"127\.0\.0\.1:(\d+) ->", log.read_text()).group(1))  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        wait_until(lambda: "blackhole" in log.read_text(), timeout=10, what="scheduled blackhole")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(0.3)
            sock.sendall(b"held")
            try:
                answered = sock.recv(4)
            except TimeoutError:
                answered = b""
        assert answered == b""
    finally:
        assert proxy.stop() == 0
    assert "stats:" in log.read_text()
