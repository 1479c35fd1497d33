"""Brigade's own processes, started the way an operator would: by their console scripts.

Used by the demo, the scenarios, the benchmarks and the tests. Nothing here imports the control
plane or the agent; they run as separate processes, stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from simulators.processes import ManagedProcess, ProcessError, free_port, wait_until

BIN = Path(sys.executable).parent


def console_script(name: str) -> str:
    """Path of one of the project's console scripts next to the running interpreter."""
    candidate = BIN / name
    return str(candidate) if candidate.exists() else name


def run_cli(*argv: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run a console script to completion and return its stdout; raise with its output on error."""
    done = subprocess.run(
        [console_script(argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise ProcessError(
            f"{' '.join(argv)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr}"
        )
    return done.stdout


class ControlPlane:
    """A ``brigade serve`` subprocess on a free loopback port with its own SQLite file."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env`` adds to the server's environment, e.g. ``{"BRIGADE_LEASE_HORIZON_S": "60"}``."""
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.db_path = root / "control-plane.db"
        self.port = port or free_port(host)
        init = run_cli("brigade", "init", "--db", str(self.db_path), "--json")
        self.admin_token: str = json.loads(init)["admin_token"]
        self.process = ManagedProcess(
            f"control-plane:{self.port}",
            [
                console_script("brigade"),
                "serve",
                "--db",
                str(self.db_path),
                "--host",
                host,
                "--port",
                str(self.port),
            ],
            log_path=root / "control-plane.log",
            env={**os.environ, **(env or {})},
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
            self.process.stop()
            raise ProcessError(f"{exc}\n{self.process.log_tail()}") from exc
        if not self.process.running():
            raise ProcessError(f"control plane exited:\n{self.process.log_tail()}")
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client for the operators' API, authenticated as admin by default."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=timeout,
        )


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer (a problem body, say), or ``{}`` if it is not one."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return body
    return {}


def created(response: httpx.Response) -> dict[str, Any]:
    """The body of a 200/201 answer; anything else is a setup failure, raised with its text."""
    if response.status_code not in (200, 201):
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body
