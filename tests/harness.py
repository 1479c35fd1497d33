"""Real local services for tests: a Mosquitto broker, a control-plane server, agent processes.

Everything starts on a free loopback port, keeps its files under the test's ``tmp_path``, and is
stopped by PID with a bounded wait when the test ends (see :mod:`simulators.processes`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from simulators.processes import ManagedProcess, free_port, wait_until

BIN = Path(sys.executable).parent


def cli(name: str) -> str:
    """Path of one of the project's console scripts in the running virtualenv."""
    return str(BIN / name)


def run_cli(*argv: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run a console script to completion and return its stdout; fail loudly on error."""
    done = subprocess.run(
        [cli(argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr}"
        )
    return done.stdout


@dataclass
class ControlPlane:
    """A ``brigade serve`` subprocess on a free loopback port with its own SQLite file."""

    root: Path
    db_path: Path = field(init=False)
    port: int = field(init=False)
    admin_token: str = field(init=False)
    process: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "control-plane.db"
        self.port = free_port()
        self.admin_token = json.loads(run_cli("brigade", "init", "--db", str(self.db_path), "--json"))[
            "admin_token"
        ]
        self.process = ManagedProcess(
            f"control-plane:{self.port}",
            [
                cli("brigade"),
                "serve",
                "--db",
                str(self.db_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            log_path=self.root / "control-plane.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 20.0) -> ControlPlane:
        self.process.start()
        try:
            wait_until(
                lambda: self.healthy() or not self.process.running(),
                timeout=timeout,
                what=f"control plane on {self.url}",
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.process.log_tail()}") from exc
        if not self.process.running():
            raise AssertionError(f"control plane exited:\n{self.process.log_tail()}")
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the operators' API, authenticated as admin by default."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=10.0,
        )
