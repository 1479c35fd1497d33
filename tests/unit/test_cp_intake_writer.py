"""The intake writer's pieces: frames survive any split of the pipe's stream, errors cross the
process boundary whole, the child decides in order (a new prep-time model applies to the
orders after it only) in bounded batches, and the app wired with it answers orders."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from control_plane import auth
from control_plane.app import create_app
from control_plane.config import Settings
from control_plane.errors import (
    BrigadeError,
    IdempotencyKeyReuse,
    IntakeUnavailable,
    OrderRejected,
    OrdersShed,
)
from control_plane.intake import IntakeAnswer
from control_plane.intake_writer import (
    MAX_BATCH,
    FrameDecoder,
    IntakeWriter,
    _Answers,
    _decide_all,
    _outcome,
    encode_frame,
)
from control_plane.metrics import Metrics
from control_plane.planning.prep_times import (
    PredictionError,
    PrepEstimate,
    PrepSeries,
    PrepSettings,
    PrepTimeModel,
)
from control_plane.planning_state import PlanningState
from control_plane.store import Store, Writer

messages = st.lists(
    st.one_of(
        st.text(max_size=50),
        st.binary(max_size=300),
        st.tuples(st.sampled_from(["order", "prep"]), st.integers(), st.text(max_size=20)),
    ),
    max_size=20,
)


@given(messages, st.lists(st.integers(min_value=0, max_value=2_000), max_size=12))
def test_frames_come_back_whole_and_in_order_however_the_stream_is_split(
    sent: list[Any], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(message) for message in sent)
    decoder = FrameDecoder()
    received: list[Any] = []
    start = 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        received += decoder.feed(stream[start:cut])
        start = cut
    assert received == sent


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = encode_frame(("order", 7, "x" * 100))
    decoder = FrameDecoder()
    assert decoder.feed(frame[:3]) == []
    assert decoder.feed(frame[3:50]) == []
    assert decoder.feed(frame[50:] + frame[:10]) == [("order", 7, "x" * 100)]
    assert decoder.feed(frame[10:]) == [("order", 7, "x" * 100)]


def test_errors_cross_the_process_boundary_whole() -> None:
    shed = OrdersShed("not now", reason="backpressure_shed", retry_after_s=7)
    for error in (
        shed,
        OrderRejected("too late", reason="deadline_infeasible"),
        IdempotencyKeyReuse("other body"),
        IntakeUnavailable("restarting"),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert (back.detail, back.reason, back.retry_after_s, back.status, back.slug) == (
            error.detail,
            error.reason,
            error.retry_after_s,
            error.status,
            error.slug,
        )
        assert str(back) == str(error)


def test_a_bug_in_a_decision_is_a_500_that_names_it_and_an_api_error_passes_through() -> None:
    ok, error = _outcome(None, KeyError("station"))
    assert not ok
    assert type(error) is BrigadeError and error.status == 500
    assert "KeyError" in error.detail
    reuse = IdempotencyKeyReuse("other body")
    assert _outcome(None, reuse) == (False, reuse)
    answer = IntakeAnswer(201, "application/json", b"{}", "accepted")
    assert _outcome(answer, None) == (True, answer)


class _RecordingStore:
    """Records each batch given to ``commit_units`` and the prep-time model in force then."""

    def __init__(self, planning: PlanningState) -> None:
        self.planning = planning
        self.batches: list[tuple[int, PrepTimeModel]] = []

    def commit_units(
        self, works: Sequence[Callable[[Writer], IntakeAnswer]]
    ) -> list[tuple[IntakeAnswer | None, BaseException | None]]:
        self.batches.append((len(works), self.planning.prep_model()))
        return [(IntakeAnswer(201, "application/json", b"{}", "accepted"), None) for _ in works]


def test_a_new_prep_model_applies_to_the_orders_after_it_and_batches_are_bounded() -> None:
    planning = PlanningState()
    store = _RecordingStore(planning)
    first = PrepTimeModel(PrepSettings(min_samples=1))
    second = PrepTimeModel(PrepSettings(min_samples=2))
    sent = [
        ("prep", first),
        ("order", 1, "pending-1"),
        ("order", 2, "pending-2"),
        ("prep", second),
        *[("order", 10 + n, f"pending-{n}") for n in range(MAX_BATCH + 3)],
    ]
    frames: list[list[tuple[int, bool, Any]]] = []
    settings = Settings(db_path=Path("unused.db"))
    _decide_all(store, sent, settings=settings, planning=planning, send=frames.append)
    assert [(n, model is first) for n, model in store.batches] == [
        (2, True),
        (MAX_BATCH, False),
        (3, False),
    ]
    assert store.batches[1][1] is second
    # One frame of answers per commit, sent as soon as it is done.
    assert [[request_id for request_id, _, _ in frame] for frame in frames] == [
        [1, 2],
        [10 + n for n in range(MAX_BATCH)],
        [10 + MAX_BATCH + n for n in range(3)],
    ]
    assert all(ok for frame in frames for _, ok, _ in frame)


def test_the_model_sent_to_the_child_plans_the_same_and_is_small() -> None:
    def series(n: int, source: str) -> PrepSeries:
        # Each its own completions, as learned (a shared object would pickle once).
        completions = tuple((float(n * 1000 + i), 290.0 + (n + i) % 20) for i in range(128))
        return PrepSeries(completions, PrepEstimate(300.0 + n, 340.0 + n, source, 128))

    model = PrepTimeModel(
        by_kitchen_sku={
            (f"k{k}", f"s{s}"): series(k * 20 + s, "kitchen_sku")
            for k in range(50)
            for s in range(20)
        },
        by_sku={f"s{n}": series(n, "sku") for n in range(20)},
        errors={("k0", "s0"): PredictionError(3, 30.0, 10.0, 2)},
    )
    slim = model.estimates_only()
    for kitchen in ("k0", "k49", "k-unknown"):
        for sku in ("s0", "s19", "s-unknown"):
            assert slim.estimate(kitchen, sku, nominal_s=100.0) == model.estimate(
                kitchen, sku, nominal_s=100.0
            )
    assert len(pickle.dumps(slim)) * 10 < len(pickle.dumps(model))


def test_an_unreadable_answer_is_reported_once_and_nothing_after_it_is_delivered() -> None:
    answers: list[Any] = []
    garbled: list[BaseException] = []
    protocol = _Answers(answers.append, lambda: None, garbled.append)
    protocol.data_received(encode_frame([(1, True, "a")]))
    protocol.data_received(b"\x00\x00\x00\x03xyz" + encode_frame([(2, True, "b")]))
    protocol.data_received(encode_frame([(3, True, "c")]))
    assert answers == [[(1, True, "a")]]
    assert len(garbled) == 1


def test_stopping_while_a_new_child_starts_stops_it_at_once(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "cp.db")
    Store.open(settings.db_path).close()
    writer = IntakeWriter(settings, metrics=Metrics())

    async def main() -> tuple[int | None, float]:
        await writer.start()
        first = writer.pid
        assert first is not None
        writer._next_restart_s = 30.0  # the automatic restart waits: this test starts one
        os.kill(first, signal.SIGKILL)
        while writer.pid == first:  # its end of file seen
            await asyncio.sleep(0.01)
        writer._respawn()  # a new child is being started...
        await asyncio.sleep(0)  # (started: its process runs, its pipes are being connected)
        started = time.monotonic()
        await writer.stop(timeout_s=5.0)  # ...when the server stops
        return writer.pid, time.monotonic() - started

    _, took_s = asyncio.run(main())
    assert took_s < 4.0
    # The child being started was stopped too, not left running.
    deadline = time.monotonic() + 5
    while _writer_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _writer_children() == []


def _writer_children() -> list[int]:
    """Live intake writer processes started by this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(ppid) == os.getpid() and state != "Z" and b"control_plane.intake_writer" in cmdline:
            found.append(int(entry.name))
    return found


def test_the_app_wired_with_the_writer_child_answers_orders(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "cp.db")
    store = Store.open(settings.db_path)
    token = auth.create_api_token(store, role="operator", name="ops", now=0.0)
    store.close()
    app = create_app(settings, intake_process=True)
    writer = app.state.services.intake_writer
    body = {
        "items": [{"sku_id": "nothing-here", "quantity": 1}],
        "promised_by": "2030-01-01T12:00:00Z",
        "destination": "store-1",
        "transport_min": 5,
    }
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"}

    async def main() -> tuple[httpx.Response, httpx.Response, int]:
        async with app.router.lifespan_context(app):
            assert writer is not None and writer.pid is not None
            pid = writer.pid
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
                first = await client.post("/v1/orders", json=body, headers=headers)
                again = await client.post("/v1/orders", json=body, headers=headers)
        return first, again, pid

    first, again, pid = asyncio.run(main())
    assert first.status_code == 422, first.text
    assert first.json()["reason"] == "sku_unknown"
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    # The app's shutdown stopped (and reaped) the child.
    assert not Path(f"/proc/{pid}").exists()
