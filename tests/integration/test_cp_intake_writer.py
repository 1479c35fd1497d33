"""``brigade serve`` decides orders in a child process (control_plane.intake_writer): answers
come back only once committed, a killed child is restarted and loses no answered order (a
retry with the same key gets each order's one answer), and a killed server takes its child
with it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from typing import Any

import httpx

from tests.fixtures_cp import StartControlPlane
from tests.harness import wait_until
from tests.integration.test_cp_api import order_body, place_order, setup_kitchen, setup_sku
from tests.integration.test_cp_loop_process import children_of, exited, metric

WRITER_MODULE = "control_plane.intake_writer"


def writer_child(server_pid: int) -> int:
    children = children_of(server_pid, WRITER_MODULE)
    assert len(children) == 1, children
    return children[0]


def histogram_count(client: httpx.Client, name: str) -> float:
    return metric(client, f"{name}_count") or 0.0


def test_orders_are_decided_in_the_writer_child(start_control_plane: StartControlPlane) -> None:
    server = start_control_plane()
    writer_child(server.process.pid)
    with server.client() as client:
        setup_kitchen(client, slots=8)
        setup_sku(client)
        body = order_body()
        answers = [place_order(client, body, key=f"k-{n}") for n in range(5)]
        assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
        # Every answer came back from the child, in batches it committed.
        assert histogram_count(client, "brigade_intake_writer_batch_orders") >= 1
        assert metric(client, "brigade_intake_writer_batch_orders_sum") == 5.0
        for answer in answers:
            stored = client.get(f"/v1/orders/{answer.json()['id']}")
            assert stored.status_code == 200
            assert stored.json()["status"] == "planned"
        # A replay is settled by the server's read: the child sees no sixth order.
        again = place_order(client, body, key="k-0")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert metric(client, "brigade_intake_writer_batch_orders_sum") == 5.0
        # Rejections are decided (and recorded) there too.
        rejected = place_order(client, order_body("no-such-sku"), key="k-bad")
        assert rejected.status_code == 422
        assert rejected.json()["reason"] == "sku_unknown"
        assert metric(client, "brigade_intake_writer_batch_orders_sum") == 6.0


def _place_until_answered(
    base_url: str, token: str, keys: list[str], body: dict[str, Any], out: dict[str, Any]
) -> None:
    """Place one order per key, retrying a 503 (or a dropped connection) with the same key, as
    a client told ``Retry-After`` does."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        for key in keys:
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = place_order(client, body, key=key)
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code != 503:
                    out[key] = (answer.status_code, answer.content)
                    break
                if answer is not None:
                    out.setdefault("503", []).append(answer.json())
                assert time.monotonic() < deadline, f"{key} never answered"
                time.sleep(0.05)


def test_a_killed_writer_child_is_restarted_and_loses_no_answered_order(
    start_control_plane: StartControlPlane,
) -> None:
    server = start_control_plane()
    first = writer_child(server.process.pid)
    body = order_body()
    with server.client() as client:
        setup_kitchen(client, slots=64)
        setup_sku(client, duration_s=60, freshness_min=60)
        outcomes: dict[str, Any] = {}
        keys = [[f"w{worker}-{n}-{uuid.uuid4().hex[:6]}" for n in range(40)] for worker in range(4)]
        workers = [
            threading.Thread(
                target=_place_until_answered,
                args=(server.url, server.admin_token, chunk, body, outcomes),
            )
            for chunk in keys
        ]
        for worker in workers:
            worker.start()
        wait_until(lambda: len(outcomes) >= 20, timeout=30, what="orders flowing")
        os.kill(first, signal.SIGKILL)
        answered_before_the_kill = len(outcomes)
        for worker in workers:
            worker.join(timeout=60)
            assert not worker.is_alive()
        wait_until(
            lambda: metric(client, "brigade_intake_writer_restarts_total") == 1.0,
            timeout=10,
            what="the restart counted",
        )
        second = writer_child(server.process.pid)
        assert second != first
        # Every 503 said what it was and how to retry.
        for problem in outcomes.pop("503", []):
            assert problem["type"].endswith("/intake-unavailable"), problem
        every_key = [key for chunk in keys for key in chunk]
        assert answered_before_the_kill < len(every_key)  # killed mid-load
        assert sorted(outcomes) == sorted(every_key)
        assert {status for status, _ in outcomes.values()} == {201}
        # One order per key, each the one its 201 named, and a replay answers the same bytes.
        ids = {
            key: httpx.Response(201, content=content).json()["id"]
            for key, (_, content) in outcomes.items()
        }
        assert len(set(ids.values())) == len(every_key)
        listed = client.get("/v1/orders", params={"limit": 500}).json()["orders"]
        assert sorted(o["id"] for o in listed) == sorted(ids.values())
        for key in every_key[::16]:
            replay = place_order(client, body, key=key)
            assert replay.status_code == 201
            assert replay.headers["Idempotent-Replayed"] == "true"
            assert replay.content == outcomes[key][1]


def test_a_killed_server_takes_its_writer_child_with_it(
    start_control_plane: StartControlPlane,
) -> None:
    server = start_control_plane()
    child = writer_child(server.process.pid)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    wait_until(
        lambda: exited(child),
        timeout=10,
        what="the orphaned intake writer to exit",
    )
    # A restarted server decides orders with a child of its own.
    server.start()
    with server.client() as client:
        setup_kitchen(client)
        setup_sku(client)
        assert place_order(client, order_body()).status_code == 201
    writer_child(server.process.pid)


def test_a_stuck_writer_child_is_killed_and_its_orders_answered_503(
    start_control_plane: StartControlPlane,
) -> None:
    """A child that is alive but never answers (here: stopped with SIGSTOP) is killed once its
    oldest order has waited ``intake_writer_timeout_s``; the order gets 503 and its retry with
    the same key a 201 from the new child."""
    server = start_control_plane(intake_writer_timeout_s=2)
    stuck = writer_child(server.process.pid)
    with server.client(timeout=30) as client:
        setup_kitchen(client)
        setup_sku(client)
        body = order_body()
        os.kill(stuck, signal.SIGSTOP)
        try:
            started = time.monotonic()
            answer = place_order(client, body, key="stuck-1")
            waited_s = time.monotonic() - started
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGCONT)
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"].endswith("/intake-unavailable")
        assert answer.headers["Retry-After"] == "1"
        assert 1.5 <= waited_s < 10
        wait_until(
            lambda: metric(client, "brigade_intake_writer_restarts_total") == 1.0,
            timeout=10,
            what="the restart counted",
        )
        wait_until(
            lambda: children_of(server.process.pid, WRITER_MODULE) not in ([], [stuck]),
            timeout=10,
            what="a new intake writer",
        )
        retry = place_order(client, body, key="stuck-1")
        assert retry.status_code == 201, retry.text
        assert "Idempotent-Replayed" not in retry.headers
