"""What the agent process loads: a kitchen box has little memory to spare."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_agent_does_not_load_httpx_command_line_client() -> None:
    """httpx's optional CLI (rich, pygments, click: ~5 MB) stays out of the agent process,
    and httpx itself still works there."""
    probe = (
        "import sys, edge_agent.cli, httpx\n"
        "loaded = [m for m in ('rich', 'pygments', 'httpx._main') if sys.modules.get(m)]\n"
        "client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204)))\n"
        "print(__import__('json').dumps([loaded, client.get('http://x/').status_code]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == [[], 204]
