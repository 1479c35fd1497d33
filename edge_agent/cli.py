"""``brigade-agent``: enroll this kitchen box, run the agent, show its status.

A thin layer over the library: each command is a few lines, its docstring is its ``--help``.
Errors print one clear line to stderr and exit 1; logs of ``run`` are JSON lines on stderr.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from edge_agent import __version__
from edge_agent.agent import Agent
from edge_agent.config import DEFAULT_CONFIG_PATH, AgentConfig, load_config, save_config
from edge_agent.errors import (
    AgentError,
    ControlPlaneUnreachable,
    EnrollmentRefused,
    TLSFailure,
)
from edge_agent.links.control_plane import ControlPlaneClient
from edge_agent.logs import configure_logging
from edge_agent.status import format_status, status_report

app = typer.Typer(
    help="Brigade edge agent: runs prep tasks on the kitchen's equipment, online or not.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", envvar="BRIGADE_AGENT_CONFIG", help="Agent config file (JSON, 0600)."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@app.command()
def enroll(
    url: Annotated[str, typer.Option("--url", help="Control plane base URL.")],
    token: Annotated[str, typer.Option("--token", help="One-time enrollment token.")],
    name: Annotated[str | None, typer.Option(help="Agent name (default: host name).")] = None,
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    mqtt_host: Annotated[str, typer.Option(help="Kitchen MQTT broker host.")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="Kitchen MQTT broker port.")] = 1883,
    data_dir: Annotated[
        Path | None, typer.Option(help="Store directory (default: 'data' beside the config).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing config file.")] = False,
) -> None:
    """Enroll this box with the control plane using a one-time token; writes the config file.

    Example:

        brigade-agent enroll --url https://cp.example.com --token 7f3a9c... \\
            --config /etc/brigade/agent.json
    """
    if config.exists() and not force:
        raise _fail(f"{config} exists (this box is enrolled); pass --force to replace it")
    agent_name = (name or socket.gethostname() or "kitchen-box")[:64]
    try:
        with ControlPlaneClient(url) as client:
            identity = client.enroll(token=token, name=agent_name, agent_version=__version__)
        settings = AgentConfig(
            agent_id=identity.agent_id,
            kitchen_id=identity.kitchen_id,
            credential=identity.credential,
            control_plane_url=url,
            mqtt_host=mqtt_host,
            mqtt_port=mqtt_port,
            data_dir=(data_dir or config.parent / "data").resolve(),
        )
        save_config(settings, config)
    except EnrollmentRefused as exc:
        hint = (
            ""
            if "new one" in str(exc)
            else " (tokens are single-use and expire; ask for a new one)"
        )
        raise _fail(f"{exc}{hint}") from exc
    except TLSFailure as exc:
        raise _fail(f"{exc} (check the URL, the server certificate and this box's clock)") from exc
    except ControlPlaneUnreachable as exc:
        raise _fail(f"{exc} (check the URL and the network)") from exc
    except (AgentError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        f"enrolled as agent {identity.agent_id} of kitchen {identity.kitchen_id}; "
        f"config written to {config}"
    )


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    mqtt_host: Annotated[str | None, typer.Option(help="Override the broker host.")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="Override the broker port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override the store directory.")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the agent until SIGTERM or SIGINT; logs JSON lines to stderr.

    Example:

        brigade-agent run --config /etc/brigade/agent.json --mqtt-host 127.0.0.1
    """
    try:
        settings = load_config(config)
    except AgentError as exc:
        raise _fail(str(exc)) from exc
    overrides: dict[str, Any] = {
        "mqtt_host": mqtt_host,
        "mqtt_port": mqtt_port,
        "data_dir": data_dir,
    }
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    configure_logging(log_level.upper())
    stop = threading.Event()

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        Agent(settings).run(stop)
    except AgentError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show identity, links, outbox, last sync, tasks, devices, open alerts and disk use.

    Example:

        brigade-agent status --config /etc/brigade/agent.json --json
    """
    try:
        report = status_report(load_config(config))
    except AgentError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
        return
    for line in format_status(report, now=time.time()):
        typer.echo(line)


def main() -> None:
    """Console-script entry point of ``brigade-agent``."""
    app(prog_name="brigade-agent")


if __name__ == "__main__":
    main()
