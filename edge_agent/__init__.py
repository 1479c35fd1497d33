"""The Brigade edge agent: runs prep tasks on kitchen equipment and keeps working offline.

Layers, imports flowing down only: pure cores (:mod:`edge_agent.executor`,
:mod:`edge_agent.safety`, :mod:`edge_agent.readings`, :mod:`edge_agent.backoff`) -> adapters
(:mod:`edge_agent.store`, :mod:`edge_agent.links` for MQTT, serial and the control plane) ->
wiring (:mod:`edge_agent.monitor`, :mod:`edge_agent.ingest`, :mod:`edge_agent.agent`,
:mod:`edge_agent.metrics`, :mod:`edge_agent.status`) -> :mod:`edge_agent.cli`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
