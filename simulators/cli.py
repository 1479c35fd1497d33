"""``brigade-sim``: simulated kitchen equipment for developers, QA and the demo.

A thin layer over :mod:`simulators.devices`; every command's docstring is its ``--help``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from firmware_stubs import KINDS
from protocol import TopicError
from protocol.topics import validate_id
from simulators.devices import run_device

app = typer.Typer(
    help="Brigade simulators: MQTT devices over a simulated plant.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def simulators() -> None:
    """Brigade simulators: MQTT devices over a simulated plant."""


def _kind(value: str) -> str:
    if value not in KINDS:
        raise typer.BadParameter(f"{value!r} is not one of: {', '.join(KINDS)}")
    return value


def _ident(value: str) -> str:
    try:
        return validate_id(value, "id")
    except TopicError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def device(
    kind: Annotated[str, typer.Option(help="Equipment kind.", callback=_kind)],
    kitchen: Annotated[str, typer.Option(help="Kitchen id (topic level).", callback=_ident)],
    device_id: Annotated[
        str, typer.Option("--id", help="Device id (topic level).", callback=_ident)
    ],
    mqtt_host: Annotated[str, typer.Option(help="Broker host.")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="Broker port.", min=1, max=65535)] = 1883,
    time_scale: Annotated[
        float, typer.Option(help="Simulated seconds per real second.", min=0.001)
    ] = 1.0,
    model: Annotated[str | None, typer.Option(help="Model name in the birth message.")] = None,
) -> None:
    """Run one simulated device on the kitchen's broker until SIGTERM or Ctrl-C.

    It publishes retained birth/status/state, readings, and answers commands on its cmd topic.
    Example, an oven at 60x speed (a 600 s cook takes 10 s):

        brigade-sim device --kind oven --kitchen k1 --id oven-1 --time-scale 60
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    run_device(
        kind,
        kitchen,
        device_id,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        time_scale=time_scale,
        model=model,
    )


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds to run; the load stops at 70 % and open orders drain. "
            "Default: until Ctrl-C.",
            min=5,
        ),
    ] = None,
    kitchens: Annotated[int, typer.Option(help="Number of kitchens.", min=1, max=20)] = 3,
    report: Annotated[
        Path | None, typer.Option(help="Write the JSON report to this file.", dir_okay=False)
    ] = None,
    rate: Annotated[float, typer.Option(help="Orders per second (Poisson).", min=0.01)] = 1.5,
    seed: Annotated[int, typer.Option(help="Seed of the order load.")] = 7,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep databases and logs here (default: a temp dir).")
    ] = None,
) -> None:
    """Run the whole system on this machine, with live progress and a summary.

    It starts a control plane, a broker, N kitchens each with an agent and simulated ovens and
    fryers, and an order load. Exits 1 if anything went wrong (errors > 0).

    Example, 30 seconds with 2 kitchens and a JSON report:

        brigade-sim demo --duration 30 --kitchens 2 --report r.json
    """
    from simulators.demo import DemoSettings, run_demo

    result = run_demo(
        DemoSettings(
            kitchens=kitchens,
            duration_s=duration,
            orders_per_s=rate,
            seed=seed,
            workdir=workdir,
            report=report,
        )
    )
    raise typer.Exit(1 if result["errors"] else 0)


def _host_port(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r} is not HOST:PORT")
    return value


@app.command()
def proxy(
    target: Annotated[
        str, typer.Option(help="Where to forward, HOST:PORT (loopback).", callback=_host_port)
    ],
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one).", min=0)] = 0,
    schedule: Annotated[
        str,
        typer.Option(
            help="Faults over time, 'SECONDS:MODE[=VALUE],...': delay=MS, bandwidth=BYTES_PER_S,"
            " half-open=upstream|downstream; the last one holds until Ctrl-C."
        ),
    ] = "0:pass",
) -> None:
    """Run a TCP fault proxy in front of a control plane or a broker until Ctrl-C.

    Point the agent (control_plane_url) or the devices (--mqtt-port) at the printed port.
    Example, pass for 10 s, blackhole for 20 s, then 300 ms delay:

        brigade-sim proxy --target 127.0.0.1:8700 --port 8701 \\
            --schedule "0:pass,10:blackhole,30:delay=300"
    """
    from simulators.chaos import ChaosError, FaultProxy, parse_schedule

    host, _, target_port = target.rpartition(":")
    try:
        steps = parse_schedule(schedule)
        faults = FaultProxy("127.0.0.1", port, host, int(target_port))
    except ChaosError as exc:
        raise typer.BadParameter(str(exc)) from exc
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_a: stop.set())
    with faults:
        typer.echo(f"fault proxy 127.0.0.1:{faults.port} -> {target}")
        started = time.monotonic()
        for at_s, fault in steps:
            if stop.wait(max(0.0, started + at_s - time.monotonic())):
                break
            faults.apply_fault(fault)
            typer.echo(f"t={at_s:g}s {fault}")
        stop.wait()
        typer.echo(f"stats: {faults.stats}")


@app.command()
def probe(
    path: Annotated[Path, typer.Option(help="Stable path (a symlink to the pty) to create.")],
    device_id: Annotated[str, typer.Option("--id", help="Probe id.", callback=_ident)] = "probe-1",
    kind: Annotated[
        str, typer.Option(help="Equipment the probe sits in (physics).", callback=_kind)
    ] = "fridge",
    setpoint: Annotated[float | None, typer.Option(help="Set point, °C.")] = 3.0,
    interval: Annotated[float, typer.Option(help="Seconds between readings.", min=0.05)] = 5.0,
    time_scale: Annotated[float, typer.Option(help="Simulated s per real s.", min=0.001)] = 1.0,
    noise: Annotated[float, typer.Option(help="Sensor noise, °C (std dev).", min=0)] = 0.0,
    garbage: Annotated[float, typer.Option(help="Share of frames preceded by garbage.")] = 0.0,
    bad_checksum: Annotated[float, typer.Option(help="Share of frames with a bad checksum.")] = 0.0,
    dropout: Annotated[float, typer.Option(help="Share of frames lost.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the faults.")] = 0,
) -> None:
    """Run a serial temperature probe on a pseudo-terminal until Ctrl-C.

    The agent opens PATH with pyserial (serial_ports in its config) as it would a USB probe.
    Example, a noisy fridge probe with 5 % bad checksums:

        brigade-sim probe --path /tmp/probe-1 --kind fridge --noise 0.3 --bad-checksum 0.05
    """
    from simulators.serial_probe import PhysicsSource, ProbeFaults, SerialProbe

    source = PhysicsSource.of_kind(kind, setpoint_c=setpoint)
    faults = ProbeFaults(
        noise_sd_c=noise, garbage_rate=garbage, bad_checksum_rate=bad_checksum, dropout_rate=dropout
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_a: stop.set())
    with SerialProbe(
        device_id,
        source,
        link_path=path,
        interval_s=interval,
        time_scale=time_scale,
        faults=faults,
        seed=seed,
    ) as running:
        typer.echo(f"probe {device_id} on {running.slave_path}, linked at {path}")
        stop.wait()


@app.command()
def scenario(
    name: Annotated[str, typer.Argument(help="Scenario name (see the list below).")],
    seed: Annotated[int, typer.Option(help="Seed of the demand and the faults.")] = 7,
    kitchens: Annotated[
        int | None,
        typer.Option(
            help="Number of kitchens (default 2; 4 with --compare-baseline).", min=1, max=20
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Seconds the whole run takes (default 60); the load plays 70 %.", min=10),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the JSON report here, and PNG charts next to it.", dir_okay=False),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep databases and logs here (default: a temp dir).")
    ] = None,
    compare_baseline: Annotated[
        bool,
        typer.Option(
            "--compare-baseline",
            help="rush only: simulate the day twice in simulated time (no processes), Brigade's"
            " planning and backpressure vs a naive baseline, print both side by side.",
        ),
    ] = False,
) -> None:
    """Run a whole-day scenario with faults and an independent invariant check.

    It starts a control plane, a broker, kitchens with agents and devices, seeded demand and
    the scenario's faults, then checks duplicate starts and lost events from evidence outside
    the agent and control plane. Exits 1 if its verdict fails.

    Scenarios: normal, rush, kitchen-offline, partition, agent-crash, broker-restart,
    equipment-failure, cooling-violation, clock-skew, device-links, control-plane-restart.

    Example, a 40-second partition with a report and charts:

        brigade-sim scenario partition --duration 40 --report partition.json

    With --compare-baseline (rush only) it instead plays the seeded day twice in simulated time,
    Brigade vs a naive nearest-kitchen dispatcher cooking to the ticket by the recipe
    ("baseline") and the same cooking at once ("baseline_asap"), in a few seconds, and writes
    {"brigade", "baseline", "baseline_asap"}.
    Example:

        brigade-sim scenario rush --compare-baseline --seed 1 --report rush.json
    """
    if compare_baseline:
        _compare_rush(name, seed=seed, kitchens=kitchens, report=report)
        return
    from simulators.scenario_run import ScenarioSettings, run_scenario
    from simulators.scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise typer.BadParameter(f"{name!r} is not one of: {', '.join(sorted(SCENARIOS))}")
    result = run_scenario(
        ScenarioSettings(
            name, seed=seed, kitchens=kitchens, duration_s=duration, report=report, workdir=workdir
        )
    )
    raise typer.Exit(0 if result["verdict"]["passed"] else 1)


def _compare_rush(name: str, *, seed: int, kitchens: int | None, report: Path | None) -> None:
    from simulators.rush_compare import RushDay, compare, format_table

    if name != "rush":
        raise typer.BadParameter(f"--compare-baseline runs the rush scenario only, not {name!r}")
    try:
        day = RushDay() if kitchens is None else RushDay(kitchens=kitchens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = compare(day, seed)
    typer.echo(format_table(result))
    if report is not None:
        report.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(f"report: {report}")


def main() -> None:
    """Entry point of the ``brigade-sim`` console script."""
    app()


if __name__ == "__main__":
    main()
