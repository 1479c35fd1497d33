"""The Brigade edge agent: runs prep tasks on kitchen equipment and keeps working offline.

Layers, imports flowing down only: pure cores (:mod:`edge_agent.executor`,
:mod:`edge_agent.safety`, :mod:`edge_agent.readings`, :mod:`edge_agent.backoff`) -> adapters
(:mod:`edge_agent.store`, :mod:`edge_agent.links` for MQTT, serial and the control plane) ->
wiring (:mod:`edge_agent.monitor`, :mod:`edge_agent.ingest`, :mod:`edge_agent.agent`,
:mod:`edge_agent.metrics`, :mod:`edge_agent.status`) -> :mod:`edge_agent.cli`.
"""

import sys

# httpx imports its optional command-line client whenever rich, pygments and click are
# installed, and typer (the agent's CLI) installs rich: ~5 MB of the agent's RSS for a tool it
# never runs. A placeholder module keeps httpx to its built-in fallback. Only before httpx is
# first imported, so a process that already has it (the test suite) is left as it is.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__version__ = "0.1.0"

__all__ = ["__version__"]
