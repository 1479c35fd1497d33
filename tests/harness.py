"""Real local services for tests: a Mosquitto broker, a control-plane server, agent processes.

Everything starts on a free loopback port, keeps its files under the test's ``tmp_path``, and is
stopped by PID with a bounded wait when the test ends (see :mod:`simulators.processes`). The
classes live in :mod:`simulators` because the demo and the benchmarks start the same processes.
"""

from __future__ import annotations

from simulators.broker import Broker
from simulators.processes import ManagedProcess, free_port, wait_until
from simulators.services import ControlPlane, console_script, run_cli

__all__ = [
    "Broker",
    "ControlPlane",
    "ManagedProcess",
    "console_script",
    "free_port",
    "run_cli",
    "wait_until",
]
