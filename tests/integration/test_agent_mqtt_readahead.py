"""The agent's paho client reads ahead and batches its PUBACKs (edge_agent.links.mqtt._Client).

Real sockets throughout: a socket pair for the framing cases (a broker cannot be made to split
packets where a test wants), a real Mosquitto for the flood.
"""

from __future__ import annotations

import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.links.mqtt import (
    _READ_BURST,
    Inbound,
    MqttLink,
    _Client,
    _merge_pubacks,
    _ReadAhead,
)
from edge_agent.readings import Observed
from protocol import Channel, topic_for
from simulators.broker import Broker
from simulators.processes import wait_until

from .test_agent_mqtt import KITCHEN, device_client


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    near, far = socket.socketpair()
    near.setblocking(False)
    try:
        yield near, far
    finally:
        near.close()
        far.close()


def test_read_ahead_serves_small_reads_from_one_recv(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    near, far = pair
    reader = _ReadAhead(near)
    far.sendall(b"abcdef")
    wait_until(lambda: _readable(near), timeout=5, what="bytes to arrive")
    assert reader.recv(1) == b"a"
    assert reader.pending() == 5
    assert reader.recv(2) == b"bc"
    assert reader.recv(10) == b"def"  # never more than is buffered
    assert reader.pending() == 0
    with pytest.raises(BlockingIOError):
        reader.recv(1)  # empty buffer and nothing on the wire: the socket's own answer
    far.shutdown(socket.SHUT_WR)
    wait_until(lambda: _readable(near), timeout=5, what="EOF to arrive")
    assert reader.recv(1) == b""  # EOF passes through: paho reads it as a lost connection
    assert reader.fileno() == near.fileno()  # the rest is the socket's


def _readable(sock: socket.socket) -> bool:
    """Whether a recv would not block (data or EOF waiting)."""
    return bool(select.select([sock], [], [], 0)[0])


def _publish_packet(topic: str, mid: int, payload: bytes) -> bytes:
    """An MQTT v5 QoS 1 PUBLISH as a broker sends it (no properties)."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + struct.pack("!H", mid) + b"\x00" + payload
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x32" + encoded + body


def _connected_client(near: socket.socket, received: list[tuple[int, bytes]]) -> _Client:
    """A client whose socket is ``near`` and which runs as if this thread were paho's loop."""
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, debug=False)
    client.on_message = lambda _c, _u, m: received.append((m.mid, bytes(m.payload)))
    client._sock = _ReadAhead(near)
    client._thread = threading.current_thread()
    return client


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 200), min_size=1, max_size=30),
)
def test_packets_split_anywhere_are_all_delivered_in_order_and_each_acked(
    sizes: list[int], cuts: list[int]
) -> None:
    """However the wire splits the packets (inside the length bytes, the topic, the payload),
    every message reaches on_message once, in order, and its PUBACK follows, in order."""
    near, far = socket.socketpair()
    near.setblocking(False)
    far.settimeout(5)
    try:
        received: list[tuple[int, bytes]] = []
        client = _connected_client(near, received)
        wire = b"".join(
            _publish_packet("brigade/v1/k1/fridge-1/telemetry", mid, bytes([mid % 251]) * size)
            for mid, size in enumerate(sizes, start=1)
        )
        at, chunks = 0, iter(cuts * (len(wire) // max(min(cuts), 1) + 1))
        while at < len(wire):
            end = min(len(wire), at + next(chunks))
            far.sendall(wire[at:end])
            at = end
            wait_until(lambda: _readable(near) or client._sock.pending(), timeout=5, what="data")  # type: ignore[union-attr]
            assert client.loop_read() is MQTTErrorCode.MQTT_ERR_SUCCESS
            client.loop_write()
        assert received == [(mid, bytes([mid % 251]) * size) for mid, size in enumerate(sizes, 1)]
        acks = b""
        while len(acks) < 4 * len(sizes):
            acks += far.recv(65536)
        assert acks == b"".join(
            struct.pack("!BBH", 0x40, 2, mid) for mid in range(1, len(sizes) + 1)
        )
    finally:
        near.close()
        far.close()


def test_pubacks_queued_together_leave_in_one_send_and_a_publish_keeps_its_place(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    near, far = pair
    far.settimeout(5)
    client = _connected_client(near, [])
    for mid in (1, 2, 3):
        client._send_puback(mid)
    client.publish("x/y", b"p", qos=0)
    client._send_puback(4)
    assert len(client._out_packet) == 5  # queued on "paho's thread": nothing written yet
    assert client.loop_write() is MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(client._out_packet) == 0
    wire = b""
    while len(wire) < 4 * 4 + 9:
        wire += far.recv(65536)
    acks = [struct.pack("!BBH", 0x40, 2, mid) for mid in (1, 2, 3, 4)]
    assert wire.startswith(b"".join(acks[:3]))
    assert wire.endswith(acks[3])
    assert wire[12] & 0xF0 == 0x30  # the PUBLISH between them, where it was queued


def test_a_burst_reads_at_most_its_bound_whatever_is_in_flight(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """However many of its own QoS 1 publishes await their acks (stock paho reads that many
    packets per call), one read reads at most ``_READ_BURST`` packets: the loop then gets its
    turn to write and to keep the keepalive. The rest follows on the next reads."""
    near, far = pair
    received: list[tuple[int, bytes]] = []
    client = _connected_client(near, received)
    client._out_messages.update({mid: mqtt.MQTTMessage(mid) for mid in range(1, 2001)})
    count = 3 * _READ_BURST + 7
    far.sendall(b"".join(_publish_packet("t/x", mid, b"r") for mid in range(1, count + 1)))
    wait_until(lambda: _readable(near), timeout=5, what="data")
    reads = []
    while len(received) < count:
        assert client.loop_read() is MQTTErrorCode.MQTT_ERR_SUCCESS
        reads.append(len(received))
    assert reads[:3] == [_READ_BURST, 2 * _READ_BURST, 3 * _READ_BURST]
    assert [mid for mid, _ in received] == list(range(1, count + 1))


def _queued(command: int, data: bytes, pos: int = 0) -> dict[str, object]:
    return {
        "command": command,
        "mid": 0,
        "qos": 0,
        "pos": pos,
        "to_process": len(data) - pos,
        "packet": data,
        "info": None,
    }


def test_each_run_of_pubacks_becomes_one_packet_and_the_rest_keep_their_place() -> None:
    ack = [struct.pack("!BBH", 0x40, 2, mid) for mid in range(6)]
    started = _queued(0x40, ack[0], pos=2)  # half sent: not touched
    publish = _queued(0x30, b"\x30\x03\x00\x01x")
    packets = [
        started,
        _queued(0x40, ack[1]),
        _queued(0x40, ack[2]),
        publish,
        _queued(0x40, ack[3]),
        _queued(0x40, ack[4]),
        _queued(0x40, ack[5]),
    ]
    merged = _merge_pubacks(packets)
    assert [m["packet"] for m in merged] == [
        ack[0],
        ack[1] + ack[2],
        publish["packet"],
        ack[3] + ack[4] + ack[5],
    ]
    assert merged[0] is started and merged[2] is publish
    assert [m["to_process"] for m in merged] == [2, 8, 5, 12]
    assert _merge_pubacks([publish]) == [publish]


class _Sink:
    def __init__(self) -> None:
        self.seqs: queue.Queue[int | None] = queue.Queue()

    def submit(self, item: object) -> bool:
        assert isinstance(item, Observed)
        self.seqs.put(item.seq)
        return True


def _telemetry(seq: int) -> bytes:
    return (
        f'{{"v":"1.0","device_id":"fridge-1","seq":{seq},"ts":{time.time():.3f},'
        f'"readings":[{{"metric":"air_temp","value":3.5,"unit":"C"}}]}}'
    ).encode()


def _link(broker: Broker, sink: _Sink) -> MqttLink:
    inbox: queue.Queue[Inbound] = queue.Queue(maxsize=10)
    return MqttLink(
        agent_id="agent-1",
        kitchen_id=KITCHEN,
        host=broker.host,
        port=broker.port,
        inbox=inbox,
        sink=sink,
    )


def test_a_qos1_flood_arrives_once_in_order_and_every_message_is_acked(broker: Broker) -> None:
    """3,000 QoS 1 readings published back to back reach the link once each, in order; then a
    new connection on the same persistent session gets nothing again (the broker had every
    PUBACK), only the marker published after it."""
    count = 3_000
    topic = topic_for(KITCHEN, "fridge-1", Channel.TELEMETRY)
    sink = _Sink()
    with _link(broker, sink) as link:
        assert link.wait_connected(10)
        with device_client(broker, "fridge-1") as device:
            infos = [device.publish(topic, _telemetry(seq), qos=1) for seq in range(1, count + 1)]
            for info in infos:
                info.wait_for_publish(30)
            got = [sink.seqs.get(timeout=30) for _ in range(count)]
    assert got == list(range(1, count + 1))
    assert sink.seqs.empty()

    with _link(broker, sink) as link:
        assert link.wait_connected(10)
        with device_client(broker, "fridge-1") as device:
            device.publish(topic, _telemetry(count + 1), qos=1).wait_for_publish(10)
        assert sink.seqs.get(timeout=10) == count + 1  # redeliveries would have come first
    assert sink.seqs.empty()
