"""``brigade serve`` runs its control loop in a child process (control_plane.loop_process): the
request path follows what it publishes, a dead child is restarted, a dead server takes its
child with it, an operator's override wakes it, and a second server on the same store follows
the leader's conclusions instead of standing by with none."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures_cp import StartControlPlane
from tests.harness import ControlPlane, ManagedProcess, console_script, free_port, wait_until
from tests.integration.test_cp_api import order_body, place_order, setup_kitchen, setup_sku

LOOP_MODULE = "control_plane.loop_process"


def children_of(pid: int, module: str | None = None) -> list[int]:
    """Live child processes of ``pid`` (from /proc: no zombies), only those running
    ``python -m module`` if given (a server also runs its intake writer)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) != pid or state == "Z":
            continue
        if module is not None:
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if module.encode() not in cmdline:
                continue
        found.append(int(entry.name))
    return found


def exited(pid: int) -> bool:
    """Whether process ``pid`` is gone (or a zombie, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def loop_child(server: ControlPlane) -> int:
    children = children_of(server.process.pid, LOOP_MODULE)
    assert len(children) == 1, children
    return children[0]


def metric(client: httpx.Client, name: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def scope(client: httpx.Client, name: str) -> dict[str, Any]:
    body = client.get("/v1/backpressure").json()
    found: dict[str, Any] = next(s for s in body["scopes"] if s["scope"] == name)
    return found


def test_the_loop_runs_in_a_child_and_the_request_path_reads_its_conclusions(
    start_control_plane: StartControlPlane,
) -> None:
    server = start_control_plane(control_interval_s=0.3)
    child = loop_child(server)
    assert child != server.process.pid
    with server.client() as client:
        setup_kitchen(client)
        setup_sku(client)
        response = place_order(client, order_body())
        assert response.status_code == 201, response.text
        order_id = response.json()["id"]

        # The prediction is computed in the child and reaches the API through the snapshot.
        wait_until(
            lambda: client.get(f"/v1/orders/{order_id}").json()["prediction"] is not None,
            timeout=15,
            what="the order's SLA prediction",
        )
        prediction = client.get(f"/v1/orders/{order_id}").json()["prediction"]
        assert prediction["cause"] == "queue" and prediction["miss_probability"] < 0.5
        assert client.get("/v1/backpressure").json()["evaluated"] is True
        # The child's metrics are part of the server's exposition, once each.
        exposition = client.get("/metrics").text
        assert exposition.count("# TYPE brigade_control_loop_tick_seconds histogram") == 1
        assert (metric(client, "brigade_control_loop_tick_seconds_count") or 0) > 0
        age = metric(client, "brigade_planning_snapshot_age_seconds")
        assert age is not None and 0 <= age < 10
    assert Path(f"{server.db_path}.planning").exists()


def test_a_killed_loop_child_is_restarted_and_publishes_again(
    start_control_plane: StartControlPlane,
) -> None:
    server = start_control_plane(control_interval_s=0.3)
    first = loop_child(server)
    with server.client() as client:
        wait_until(
            lambda: (metric(client, "brigade_control_loop_tick_seconds_count") or 0) > 0,
            timeout=15,
            what="a first tick",
        )
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: metric(client, "brigade_control_loop_restarts_total") == 1.0,
            timeout=15,
            what="the restart counted",
        )
        wait_until(
            lambda: children_of(server.process.pid, LOOP_MODULE) not in ([], [first]),
            timeout=15,
            what="a new control-loop child",
        )
        second = loop_child(server)
        assert second != first
        # The new child ticks and publishes: its own tick counter (from zero) moves, and the
        # snapshot in force is fresh.
        wait_until(
            lambda: (
                (metric(client, "brigade_control_loop_tick_seconds_count") or 0) >= 2
                and (metric(client, "brigade_planning_snapshot_age_seconds") or 99) < 2
            ),
            timeout=15,
            what="ticks from the new child",
        )
        assert client.get("/healthz").status_code == 200


def test_a_killed_server_takes_its_loop_child_with_it(
    start_control_plane: StartControlPlane,
) -> None:
    """kill -9 of the server alone (not its process group): the child sees its stdin close
    and exits, and does not hold the store's control-loop lock for a restarted server."""
    server = start_control_plane(control_interval_s=0.3)
    child = loop_child(server)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    wait_until(
        lambda: exited(child),
        timeout=10,
        what="the orphaned control-loop child to exit",
    )
    # A restarted server's child takes the lock and ticks.
    server.start()
    with server.client() as client:
        wait_until(
            lambda: (metric(client, "brigade_control_loop_tick_seconds_count") or 0) > 0,
            timeout=15,
            what="the restarted server's loop ticking",
        )


def test_an_override_wakes_the_loop_child_at_once(start_control_plane: StartControlPlane) -> None:
    """With a 60 s interval, an operator's override still shows within seconds."""
    server = start_control_plane(control_interval_s=60)
    with server.client() as client:
        wait_until(
            lambda: client.get("/v1/backpressure").json()["evaluated"],
            timeout=15,
            what="the first evaluation",
        )
        response = client.put(
            "/v1/backpressure/overrides/*", json={"level": "shed", "reason": "test"}
        )
        assert response.status_code == 200, response.text
        wait_until(
            lambda: scope(client, "*")["level"] == "shed",
            timeout=10,
            what="the override applied well before the next interval",
        )


def test_a_second_server_on_the_store_follows_the_leaders_conclusions(
    start_control_plane: StartControlPlane, tmp_path: Path
) -> None:
    """Two servers, one store: one child ticks, the other stands by, and both servers shed
    with the same levels (the standby one used to know none)."""
    leader = start_control_plane(control_interval_s=0.3)
    port = free_port(leader.host)
    second = ManagedProcess(
        f"control-plane:{port}",
        [
            console_script("brigade"),
            "serve",
            "--db",
            str(leader.db_path),
            "--host",
            leader.host,
            "--port",
            str(port),
        ],
        log_path=tmp_path / "second.log",
        env={**leader.process.env},
    ).start()
    try:
        url = f"http://{leader.host}:{port}"
        auth = {"Authorization": f"Bearer {leader.admin_token}"}
        with httpx.Client(base_url=url, headers=auth, timeout=10) as other:
            wait_until(
                lambda: _answers(other), timeout=20, what="the second server on the same store"
            )
            with leader.client() as client:
                response = client.put(
                    "/v1/backpressure/overrides/*", json={"level": "pause", "reason": "test"}
                )
                assert response.status_code == 200, response.text
                wait_until(
                    lambda: scope(client, "*")["level"] == "pause",
                    timeout=15,
                    what="the leader pausing",
                )
            wait_until(
                lambda: scope(other, "*")["level"] == "pause",
                timeout=15,
                what="the second server following the leader's level",
            )
            assert len(children_of(second.pid, LOOP_MODULE)) == 1  # its child runs, standing by
            wait_until(
                lambda: "standing by" in (tmp_path / "second.log").read_text(),
                timeout=15,
                what="the second server's loop child standing by",
            )
            assert "standing by" not in (leader.root / "control-plane.log").read_text()
    finally:
        second.stop()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
