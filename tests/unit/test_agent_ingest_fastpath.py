"""The ingest path's shortcuts decide exactly what the long way decides.

Telemetry floods go through a fast decode (pydantic's JSON parser, falling back to the checked
path), a cached topic parser, a batched monitor call and a once-per-flush device summary. Each
is checked here against the way it replaced, for good and for hostile input.
"""

from __future__ import annotations

import json
import math
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.ingest import Ingest
from edge_agent.links.mqtt import MqttLink
from edge_agent.monitor import SafetyMonitor
from edge_agent.readings import Observed, ReadingIn
from edge_agent.safety import RULE_PACKS
from edge_agent.store import Store
from protocol import (
    Ack,
    Birth,
    Command,
    DeviceEvent,
    ProtocolError,
    State,
    Status,
    Telemetry,
    TopicError,
    parse_topic,
)
from protocol.base import MAX_MESSAGE_BYTES, WireModel, _decode_checked, decode_message

MODELS: list[type[WireModel]] = [Birth, Status, State, Telemetry, DeviceEvent, Command, Ack]
T0 = 1_767_225_600.0


def outcome(decode: Any, model: type[WireModel], raw: bytes) -> tuple[object, ...]:
    """What a decoder made of ``raw``: the message (``repr``, so NaN equals NaN) or the error."""
    try:
        return ("decoded", repr(decode(model, raw)))
    except ProtocolError as exc:
        return ("refused", type(exc).__name__, exc.reason, str(exc))
    except RecursionError:
        return ("recursion",)


def checked(model: type[WireModel], raw: bytes) -> WireModel:
    """The decoding the fast path stands in for: the size limit, then every check in turn."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return decode_message(model, raw)  # refused before any parsing, by either path
    return _decode_checked(model, raw)


def telemetry(**fields: object) -> dict[str, object]:
    message: dict[str, object] = {
        "v": "1.0",
        "device_id": "fridge-1",
        "seq": 7,
        "ts": T0,
        "readings": [{"metric": "air_temp", "value": 3.5, "unit": "C"}],
    }
    message.update(fields)
    return message


def reading(value: str) -> bytes:
    """Telemetry whose one reading's value is the JSON literal ``value``."""
    return (
        '{"v":"1.0","device_id":"fridge-1","seq":7,"ts":1.5,'
        f'"readings":[{{"metric":"air_temp","value":{value},"unit":"C"}}]}}'
    ).encode()


MALFORMED: dict[str, bytes] = {
    "valid": json.dumps(telemetry()).encode(),
    "valid newer minor with unknown field": json.dumps(telemetry(v="1.9", extra=1)).encode(),
    "not json": b"{not json",
    "empty": b"",
    "trailing garbage": json.dumps(telemetry()).encode() + b" x",
    "control character in a string": reading('1,"x":"a\x01b"'),
    "not an object": b"[1, 2]",
    "null": b"null",
    "wrong type seq": json.dumps(telemetry(seq="seven")).encode(),
    "seq as numeric string": json.dumps(telemetry(seq="7")).encode(),
    "negative seq": json.dumps(telemetry(seq=-1)).encode(),
    "no readings": json.dumps(telemetry(readings=[])).encode(),
    "reading value a string": json.dumps(
        telemetry(readings=[{"metric": "t", "value": "warm", "unit": "C"}])
    ).encode(),
    "unknown major version": json.dumps(telemetry(v="2.0")).encode(),
    "version not a string": json.dumps(telemetry(v=1)).encode(),
    "version with non-ascii digits": json.dumps(telemetry(v="\u0661.0")).encode(),
    "unknown major in a reading": json.dumps(
        telemetry(readings=[{"v": "2.0", "metric": "t", "value": 1, "unit": "C"}])
    ).encode(),
    "NaN reading": reading("NaN"),
    "infinite reading": reading("Infinity"),
    "overflowing float literal": reading("1e400"),
    "integer too big for a float": reading("9" * 400),
    "integer just too big for a float": reading("2" + "0" * 308),
    "integer just fitting a float": reading("1" + "0" * 308),
    "integer beyond 2**53": reading("9007199254740993"),
    "NaN timestamp": json.dumps(telemetry(ts=math.nan)).encode(),
    "bad device id": json.dumps(telemetry(device_id="fridge/1")).encode(),
    "duplicate key": b'{"device_id":"x",' + json.dumps(telemetry())[1:].encode(),
    "lone surrogate": reading('1,"metric":"\\ud800"'),
    "escaped NUL": reading('1,"metric":"a\\u0000"'),
    "UTF-8 BOM": "\ufeff".encode() + json.dumps(telemetry()).encode(),
    "UTF-16": json.dumps(telemetry()).encode("utf-16"),
    "invalid UTF-8": reading('1,"metric":"x"').replace(b'"x"', b'"\xff"'),
    "deeply nested": reading('1,"x":' + "[" * 5000 + "]" * 5000),
    "too large": json.dumps(telemetry(pad="x" * MAX_MESSAGE_BYTES)).encode(),
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("raw", MALFORMED.values(), ids=list(MALFORMED))
def test_fast_decode_matches_the_checked_path(model: type[WireModel], raw: bytes) -> None:
    """Good or hostile, a payload decodes to the same message or the same refusal (reason
    and detail) through the fast path as through the step-by-step checks."""
    assert outcome(decode_message, model, raw) == outcome(checked, model, raw)


def test_an_integer_too_big_for_a_float_is_still_refused() -> None:
    """pydantic's parser would read it as infinity; the agent refuses it as before."""
    with pytest.raises(ProtocolError) as refused:
        decode_message(Telemetry, reading("9" * 400))
    assert refused.value.reason == "invalid_message"


def test_an_unknown_major_version_keeps_its_reason() -> None:
    """The fast path's refusal falls back, so ``2.0`` is still ``unsupported_version``."""
    with pytest.raises(ProtocolError) as refused:
        decode_message(Telemetry, json.dumps(telemetry(v="2.0")).encode())
    assert refused.value.reason == "unsupported_version"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["1.0", "1.7", "2.0", "01.0", "1", "fridge-1", "C", "F", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
near_telemetry = st.builds(
    lambda changes, readings: telemetry(**changes, readings=readings),
    st.dictionaries(
        st.sampled_from(["v", "device_id", "seq", "ts", "event", "state", "kind", "mode"]),
        json_scalars,
        max_size=3,
    ),
    st.lists(
        st.dictionaries(st.sampled_from(["v", "metric", "value", "unit"]), json_scalars),
        max_size=3,
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), message=json_values | near_telemetry)
def test_fast_decode_matches_the_checked_path_on_any_json(
    model: type[WireModel], message: object
) -> None:
    """Any JSON document, near-valid or not, decodes alike both ways."""
    raw = json.dumps(message).encode()
    assert outcome(decode_message, model, raw) == outcome(checked, model, raw)


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), raw=st.binary(max_size=200))
def test_fast_decode_matches_the_checked_path_on_any_bytes(
    model: type[WireModel], raw: bytes
) -> None:
    """Arbitrary bytes too."""
    assert outcome(decode_message, model, raw) == outcome(checked, model, raw)


def test_cached_topic_parse_still_refuses_bad_topics() -> None:
    """A refused topic is refused every time (refusals are not cached); good ones parse alike."""
    for _ in range(2):
        with pytest.raises(TopicError):
            parse_topic("brigade/v1/k1/bad id/telemetry")
        assert parse_topic("brigade/v1/k1/oven-1/ack").device_id == "oven-1"


def test_topic_cache_is_bounded() -> None:
    """A flood of distinct topics cannot grow the cache without bound."""
    assert parse_topic.cache_info().maxsize is not None


class Sink(list[Any]):
    def submit(self, item: Any) -> bool:
        self.append(item)
        return True


def make_link(sink: Sink) -> MqttLink:
    return MqttLink(
        agent_id="a1", kitchen_id="k1", host="127.0.0.1", port=1, inbox=queue.Queue(), sink=sink
    )


def test_link_drops_non_finite_readings_and_keeps_the_rest() -> None:
    """NaN is counted as ``non_finite``; the finite readings of the message still go in,
    Fahrenheit made Celsius."""
    sink = Sink()
    link = make_link(sink)
    payload = json.dumps(
        telemetry(
            readings=[
                {"metric": "air_temp", "value": math.nan, "unit": "C"},
                {"metric": "food_temp", "value": 41.0, "unit": "F"},
            ]
        )
    )
    link.handle_message("brigade/v1/k1/fridge-1/telemetry", payload.encode())
    assert link.drops.counts() == {"non_finite": 1}
    [observed] = sink
    assert observed.seq == 7
    assert [(r.metric, r.unit, r.value, r.link) for r in observed.readings] == [
        ("food_temp", "C", 5.0, "mqtt")
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not_json"),
        (b"[]", "invalid_message"),
        (json.dumps(telemetry(v="2.0")).encode(), "unsupported_version"),
        (json.dumps(telemetry(device_id="fridge-2")).encode(), "device_mismatch"),
        (json.dumps(telemetry(pad="x" * MAX_MESSAGE_BYTES)).encode(), "too_large"),
    ],
)
def test_link_counts_refused_telemetry_by_reason(payload: bytes, reason: str) -> None:
    """A refused telemetry message is counted under its reason and never reaches ingest."""
    sink = Sink()
    link = make_link(sink)
    link.handle_message("brigade/v1/k1/fridge-1/telemetry", payload)
    assert link.drops.counts() == {reason: 1}
    assert sink == []


KINDS = {"fridge-1": "fridge", "hot-1": "hot_hold", "chill-1": "blast_chiller", "oven-1": "oven"}
readings_seq = st.lists(
    st.tuples(
        st.sampled_from(sorted(KINDS)),
        st.sampled_from(["air_temp", "core", "setpoint"]),
        st.sampled_from(["C", "%"]),
        st.floats(min_value=-30.0, max_value=90.0),
        st.floats(min_value=0.0, max_value=3 * 3600.0),
    ),
    max_size=40,
)


def monitor() -> SafetyMonitor:
    return SafetyMonitor(pack=RULE_PACKS["us_fda_food_code_2022"], kind_of=KINDS.get)


@settings(max_examples=200, deadline=None)
@given(raw=readings_seq)
def test_monitor_batch_decides_as_readings_one_by_one(
    raw: list[tuple[str, str, str, float, float]],
) -> None:
    """A flush's worth of readings at once raises, clears and keeps the same as one by one."""
    at = T0
    readings = []
    for device, metric, unit, value, step in raw:
        at += step
        readings.append(ReadingIn(device, metric, unit, value, at=at))
    one_by_one, batched = monitor(), monitor()
    expected = [one_by_one.on_reading(r) for r in readings]
    got = batched.on_readings(readings)
    assert got.alerts == [a for e in expected for a in e.alerts]
    assert got.evidence == [x for e in expected for x in e.evidence]
    assert got.cleared == [c for e in expected for c in e.cleared]
    assert one_by_one.tick(at + 7200.0) == batched.tick(at + 7200.0)


@dataclass
class FakeClock:
    wall_time: float = T0

    def monotonic(self) -> float:
        return self.wall_time

    def wall(self) -> float:
        return self.wall_time


@contextmanager
def stores() -> Iterator[tuple[Store, Store]]:
    with (
        Store.open(Path(":memory:"), boot_id="b") as first,
        Store.open(Path(":memory:"), boot_id="b") as second,
    ):
        yield first, second


def ingest_on(store: Store, **limits: int) -> Ingest:
    return Ingest(store=store, monitor=monitor(), clock=FakeClock(), window_s=60.0, **limits)


def record_of(store: Store, ingest: Ingest) -> tuple[object, ...]:
    devices = [
        (d["device_id"], d["link"], d["last_seen_at"], d["last_seq"], d["missed_messages"])
        for d in store.devices()
    ]
    counts = ingest.counts()
    return devices, store.evidence(), store.alerts(), counts, ingest.health.changes(now=T0 + 60)


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(["fridge-1", "oven-1"]),
            st.integers(min_value=0, max_value=40),
            st.floats(min_value=-5.0, max_value=15.0),
        ),
        max_size=30,
    )
)
def test_one_flush_records_what_flushing_each_message_records(
    messages: list[tuple[str, int, float]],
) -> None:
    """Seq gaps, last seen, last seq, health and evidence are summarised per device and flush;
    one flush of many messages leaves the same record as a flush after each."""
    with stores() as (first, second):
        batched, each = ingest_on(first), ingest_on(second)
        for n, (device, seq, value) in enumerate(messages):
            at = T0 + n
            reading = ReadingIn(device, "air_temp", "C", value, at)
            item = Observed(device, "mqtt", seq, at, (reading,))
            batched.submit(item)
            each.submit(item)
            each.flush()
        batched.flush()
        assert record_of(first, batched) == record_of(second, each)


def test_queue_is_bounded_and_counts_what_it_refuses(tmp_path: Path) -> None:
    """Past ``queue_size`` a message is refused and its readings counted as ``queue_full``."""
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        ingest = ingest_on(store, queue_size=2)
        item = Observed("fridge-1", "mqtt", 1, T0, (ReadingIn("fridge-1", "t", "C", 3.0, T0),) * 3)
        assert [ingest.submit(item) for _ in range(3)] == [True, True, False]
        assert ingest.counts()["dropped"] == {"queue_full": 3}
        assert ingest.counts()["queue_depth"] == 2


def test_a_flush_takes_at_most_max_batch(tmp_path: Path) -> None:
    """A backlog is taken ``max_batch`` messages at a time, oldest first."""
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        ingest = ingest_on(store, max_batch=2)
        for seq in range(1, 6):
            ingest.submit(
                Observed("fridge-1", "mqtt", seq, T0, (ReadingIn("fridge-1", "t", "C", 3.0, T0),))
            )
        assert [ingest.flush() for _ in range(4)] == [2, 2, 1, 0]
        assert ingest.seqs.last("fridge-1") == 5
        assert ingest.seqs.missed_total == 0


def linked_ingest(store: Store) -> tuple[MqttLink, Ingest]:
    """A link whose sink is the ingest loop: telemetry goes in undecoded."""
    ingest = ingest_on(store)
    link = MqttLink(
        agent_id="a1", kitchen_id="k1", host="127.0.0.1", port=1, inbox=queue.Queue(), sink=ingest
    )
    return link, ingest


REFUSED = [
    (b"{not json", "not_json"),
    (b"", "not_json"),
    (b"[]", "invalid_message"),
    (json.dumps(telemetry(v="2.0")).encode(), "unsupported_version"),
    (json.dumps(telemetry(device_id="fridge-2")).encode(), "device_mismatch"),
    (json.dumps(telemetry(pad="x" * MAX_MESSAGE_BYTES)).encode(), "too_large"),
]


@pytest.mark.parametrize(("payload", "reason"), REFUSED)
def test_telemetry_decoded_at_flush_is_refused_as_when_decoded_at_once(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    """Queued undecoded, refused telemetry is counted by the link under the same reason when
    the ingest loop decodes it, and the good message beside it still goes in."""
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        link, ingest = linked_ingest(store)
        good = json.dumps(telemetry(seq=8)).encode()
        link.handle_message("brigade/v1/k1/fridge-1/telemetry", payload)
        link.handle_message("brigade/v1/k1/fridge-1/telemetry", good)
        assert link.drops.counts() == {}  # nothing is decoded on paho's thread
        assert ingest.counts()["queue_depth"] == 2
        assert ingest.flush() == 1
        assert link.drops.counts() == {reason: 1}
        assert ingest.seqs.last("fridge-1") == 8


def test_deferred_telemetry_keeps_its_arrival_time_and_order_with_other_messages(
    tmp_path: Path,
) -> None:
    """Telemetry decoded later is stamped when it arrived and checked for seq gaps in arrival
    order with the device's other messages (a state between two readings is no gap)."""
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        link, ingest = linked_ingest(store)
        topic = "brigade/v1/k1/fridge-1/{}"
        link.handle_message(topic.format("telemetry"), json.dumps(telemetry(seq=1)).encode())
        state = {"v": "1.0", "device_id": "fridge-1", "seq": 2, "ts": T0, "mode": "idle"}
        link.handle_message(topic.format("state"), json.dumps(state).encode())
        link.handle_message(topic.format("telemetry"), json.dumps(telemetry(seq=3)).encode())
        [first, middle, last] = list(ingest._observed)
        assert first.at <= middle.at <= last.at
        assert ingest.flush() == 2
        assert ingest.seqs.missed_total == 0
        assert ingest.seqs.last("fridge-1") == 3
        assert link.drops.counts() == {}


def test_an_unexpected_decoding_error_loses_one_message_not_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in decoding one message is counted as ``internal_error``; the rest of the flush
    is taken in."""

    def flaky(model: type[WireModel], raw: bytes) -> WireModel:
        if b'"seq": 2,' in raw:
            raise RuntimeError("bug")
        return decode_message(model, raw)

    monkeypatch.setattr("edge_agent.links.mqtt.decode_message", flaky)
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        link, ingest = linked_ingest(store)
        for seq in (1, 2, 3):
            link.handle_message(
                "brigade/v1/k1/fridge-1/telemetry", json.dumps(telemetry(seq=seq)).encode()
            )
        assert ingest.flush() == 2
        assert link.drops.counts() == {"internal_error": 1}


def test_a_full_queue_refuses_undecoded_telemetry_and_counts_it(tmp_path: Path) -> None:
    """Undecoded telemetry counts against the same bound; a refused message is counted once by
    the ingest loop (``queue_full``) and once by the link (``ingest_full``)."""
    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        ingest = Ingest(store=store, monitor=monitor(), clock=FakeClock(), queue_size=1)
        link = MqttLink(
            agent_id="a1",
            kitchen_id="k1",
            host="127.0.0.1",
            port=1,
            inbox=queue.Queue(),
            sink=ingest,
        )
        for seq in (1, 2):
            link.handle_message(
                "brigade/v1/k1/fridge-1/telemetry", json.dumps(telemetry(seq=seq)).encode()
            )
        assert ingest.counts()["dropped"] == {"queue_full": 1}
        assert link.drops.counts() == {"ingest_full": 1}
        assert ingest.flush() == 1


@pytest.mark.parametrize("debug", [False, True])
def test_paho_debug_lines_are_skipped_unless_debug_is_on(
    debug: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """paho's per-packet DEBUG lines cost CPU in a flood: they reach the log only when its
    logger is enabled for DEBUG; warnings and errors always do."""
    import logging

    from paho.mqtt.enums import CallbackAPIVersion, LogLevel

    from edge_agent.links.mqtt import _Client

    logger = logging.getLogger("test.paho")
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", debug=debug)
    client.enable_logger(logger)
    with caplog.at_level(logging.DEBUG, logger="test.paho"):
        client._easy_log(LogLevel.MQTT_LOG_DEBUG, "Received PUBLISH (m%d)", 1)
        client._easy_log(LogLevel.MQTT_LOG_WARNING, "socket trouble %s", "x")
    messages = [r.getMessage() for r in caplog.records if r.name == "test.paho"]
    assert messages == (["Received PUBLISH (m1)"] if debug else []) + ["socket trouble x"]


def test_only_the_kitchens_own_telemetry_topics_take_the_short_way(tmp_path: Path) -> None:
    """The link remembers accepted telemetry topics (a bounded map); another kitchen's or a
    reserved device id's messages are never remembered and never queued."""
    from edge_agent.links import mqtt as mqtt_link

    with Store.open(tmp_path / "agent.db", boot_id="b") as store:
        link, ingest = linked_ingest(store)
        good = json.dumps(telemetry()).encode()
        for topic in ("brigade/v1/k2/fridge-1/telemetry", "brigade/v1/k1/agent/telemetry"):
            link.handle_message(topic, good)
            link.handle_message(topic, good)
        assert ingest.counts()["queue_depth"] == 0
        assert link._telemetry_topics == {}
        for n in range(mqtt_link._TELEMETRY_TOPICS + 10):
            link.handle_message(f"brigade/v1/k1/fridge-{n}/telemetry", b"{}")
        assert len(link._telemetry_topics) == mqtt_link._TELEMETRY_TOPICS
        assert ingest.counts()["queue_depth"] == mqtt_link._TELEMETRY_TOPICS + 10
