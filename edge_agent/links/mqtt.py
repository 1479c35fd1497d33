"""The agent's link to the kitchen's MQTT broker (paho-mqtt 2, MQTT v5).

* Client id ``brigade-agent-{agent_id}``, clean start off and a session expiry, so the broker
  keeps the subscription and queues QoS 1 acks while the agent is down (restart, kill -9).
* Subscribes ``brigade/v1/{kitchen}/+/+`` at QoS 1 with *no local* (it never hears its own
  commands), again on every reconnect.
* Last Will: retained ``offline`` on ``brigade/v1/{kitchen}/agent/status``; retained ``online``
  is published on every connect.
* Reconnects on its own (paho's loop thread) with exponential backoff from ~1 s to ~30 s,
  jittered: each disconnect draws a fresh starting delay and cap, so devices and agents that
  lost the broker together (a broker restart) do not come back in lockstep.
* Every message is decoded with :func:`protocol.decode_message`; a malformed one is dropped and
  counted by reason (:class:`DropCounter`), never raised.
* Acks and staff confirmations go to the executor through a bounded queue; a full queue drops
  and counts (the executor re-sends the same command id, and the device re-sends its ack).
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, LogLevel, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.readings import (
    CorrectiveAction,
    Observed,
    ProbeCheck,
    RawTelemetry,
    ReadingIn,
    StatusSeen,
)
from protocol import (
    AGENT_DEVICE_ID,
    Ack,
    Birth,
    Channel,
    Command,
    DeviceEvent,
    DeviceMode,
    ProtocolError,
    State,
    Status,
    Telemetry,
    TopicParts,
    decode_message,
    encode_message,
    is_reserved_device_id,
    parse_topic,
    subscription_for,
    topic_for,
)

log = logging.getLogger(__name__)

#: What an inbound message for the executor can be.
Inbound = Ack | DeviceEvent


class DeviceSink(Protocol):
    """Where the link hands what devices report (the ingest loop; a list in unit tests).

    A sink that also has ``submit_raw(RawTelemetry) -> bool`` (the ingest loop) is handed
    telemetry undecoded and decodes it in batches with the link's decoder; to any other sink
    the link hands telemetry decoded.
    """

    def submit(self, item: Any) -> bool: ...


#: How much one ``recv`` takes from the kernel for the read-ahead buffer.
_READ_AHEAD = 65_536
#: Packets read in one go, at most, before paho's loop gets a turn (to send the PUBACKs queued
#: meanwhile and keep its keepalive clock).
_READ_BURST = 256
_PUBACK = 0x40


class _ReadAhead:
    """A plain TCP socket read ahead in 64 KiB chunks.

    paho reads every packet with at least three ``recv`` calls (the command byte, each byte of
    the remaining length, the body), each a system call that also releases the GIL. Reading
    ahead serves those from one buffer. ``pending()`` is what paho asks an SSL socket before
    it blocks in ``select``: with bytes buffered it does not wait. Everything else (``send``,
    ``fileno``, ``close``, options) goes to the socket itself.
    """

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = bytes(self._sock.recv(_READ_AHEAD))  # BlockingIOError when empty, b"" at EOF
            if not buf:
                return buf
            self._buf, pos = buf, 0
        end = min(pos + bufsize, len(buf))
        self._pos = end
        return buf[pos:end]

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _is_puback(packet: Any) -> bool:
    """Whether a queued packet of paho's is a PUBACK."""
    command: int = packet["command"]
    return (command & 0xF0) == _PUBACK


class _Client(mqtt.Client):
    """paho's client, made cheaper per message received (a telemetry flood is thousands a
    second on a small box). Same packets on the wire, same callbacks, same acks after them.

    * paho formats nothing but still makes two logging calls per message received
      (``Received PUBLISH``, ``Sending PUBACK``), a tenth of its own CPU time in a flood. They
      are skipped unless the paho logger is enabled for DEBUG when the link is made; warnings
      and errors always go through.
    * A plain TCP socket is read ahead (:class:`_ReadAhead`), and each read takes every whole
      packet available, up to ``_READ_BURST``, before paho's loop selects again (stock paho
      reads one packet per ``select`` when the client has nothing in flight).
    * A packet queued on paho's own thread (the PUBACK of a message just read) does not also
      write a wake-up byte to paho's socket pair: that thread recomputes what to write before
      it next waits. Other threads still wake it.
    * PUBACKs queued back to back go out in one ``send`` (a queued PUBLISH keeps its place
      between them).

    So ``socket()`` and the ``on_socket_*`` callbacks see the :class:`_ReadAhead`, not the
    ``socket.socket`` itself. A reconnect drops the PUBACKs not yet written, as stock paho
    does; with a burst read before they are written there can be more of them, and the broker
    redelivers those messages (at least once, as QoS 1 promises).
    """

    def __init__(self, *args: Any, debug: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._debug_log = debug

    def _easy_log(self, level: LogLevel, fmt: str, *args: Any) -> None:
        if level is LogLevel.MQTT_LOG_DEBUG and not self._debug_log:
            return
        super()._easy_log(level, fmt, *args)

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._ssl or self._transport != "tcp":
            return sock
        return _ReadAhead(sock)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read every whole packet available, at most ``_READ_BURST`` in all, then let the loop
        write (PUBACKs, commands) and keep its keepalive. Stock paho reads
        ``len(out messages) + len(in messages)`` packets per call, whatever it is asked."""
        if not isinstance(self._sock, _ReadAhead):
            return super().loop_read(max_packets)
        for _ in range(_READ_BURST):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._thread is None or threading.current_thread() is not self._thread:
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": info,
            }
        )
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        out = self._out_packet
        queued = len(out)
        if queued > 1:
            # Only this (paho's) thread takes from the left; others append on the right, so
            # the first ``queued`` are ours to rearrange and go back in front, in order.
            packets = [out.popleft() for _ in range(queued)]
            out.extendleft(reversed(_merge_pubacks(packets)))
        return super()._packet_write()


def _merge_pubacks(packets: list[Any]) -> list[Any]:
    """``packets`` (paho's queued packets) with each run of PUBACKs not yet started made one
    packet: the same bytes in the same order, one ``send``. Anything else keeps its place."""
    merged: list[Any] = []
    run: list[Any] = []

    def close_run() -> None:
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            data = b"".join(packet["packet"] for packet in run)
            merged.append({**run[0], "packet": data, "to_process": len(data)})
        run.clear()

    for packet in packets:
        if _is_puback(packet) and packet["pos"] == 0:
            run.append(packet)
            continue
        close_run()
        merged.append(packet)
    close_run()
    return merged


class CommandLink(Protocol):
    """What the executor needs from the broker link (a fake implements it in unit tests)."""

    @property
    def connected(self) -> bool: ...

    def publish_command(self, device_id: str, command: Command) -> bool: ...


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the agent knows about one device from its retained birth, status and state."""

    device_id: str
    kind: str | None
    online: bool
    mode: str | None = None

    @property
    def health(self) -> str:
        """``offline`` (Last Will or never online), ``failed`` (its state says ``fault``), or
        ``ok``. A failed device is given no new work."""
        if not self.online:
            return "offline"
        return "failed" if self.mode == DeviceMode.FAULT else "ok"


class DeviceRegistry:
    """Devices learned from retained ``birth`` and ``status`` messages; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}
        self._online: dict[str, bool] = {}
        self._modes: dict[str, str] = {}

    def record_birth(self, device_id: str, birth: Birth) -> None:
        with self._lock:
            self._kinds[device_id] = birth.kind.value

    def record_status(self, device_id: str, status: Status) -> None:
        with self._lock:
            self._online[device_id] = status.state == "online"

    def record_state(self, device_id: str, state: State) -> None:
        with self._lock:
            self._modes[device_id] = state.mode.value

    def kind_of(self, device_id: str) -> str | None:
        with self._lock:
            return self._kinds.get(device_id)

    def forget(self, device_id: str) -> None:
        """A device's retained messages were cleared: it is decommissioned."""
        with self._lock:
            self._kinds.pop(device_id, None)
            self._online.pop(device_id, None)
            self._modes.pop(device_id, None)

    def devices(self) -> dict[str, DeviceInfo]:
        with self._lock:
            ids = set(self._kinds) | set(self._online)
            return {
                d: DeviceInfo(d, self._kinds.get(d), self._online.get(d, False), self._modes.get(d))
                for d in sorted(ids)
            }

    def online_by_kind(self) -> dict[str, tuple[str, ...]]:
        """Healthy online devices with a known kind, grouped by kind (the executor's choice)."""
        grouped: dict[str, list[str]] = {}
        for info in self.devices().values():
            if info.health == "ok" and info.kind is not None:
                grouped.setdefault(info.kind, []).append(info.device_id)
        return {kind: tuple(ids) for kind, ids in grouped.items()}


class DropCounter:
    """Counts dropped messages by reason; logs the first drop of a burst per reason."""

    def __init__(self, *, quiet_s: float = 60.0, what: str = "MQTT message") -> None:
        self._what = what
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._quiet_s = quiet_s

    def drop(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[reason] += 1
            last = self._last_logged.get(reason)
            should_log = last is None or now - last >= self._quiet_s
            if should_log:
                self._last_logged[reason] = now
        if should_log:
            log.warning(f"dropped {self._what}", extra={"reason": reason, "detail": detail[:300]})

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


#: The model of every channel; everything is decoded so malformed input is counted everywhere.
_MODELS: dict[Channel, type[Any]] = {
    Channel.BIRTH: Birth,
    Channel.STATUS: Status,
    Channel.STATE: State,
    Channel.TELEMETRY: Telemetry,
    Channel.EVENT: DeviceEvent,
    Channel.CMD: Command,
    Channel.ACK: Ack,
}
_DEVICE_MESSAGES = (Birth, State, Telemetry, DeviceEvent, Ack)
#: How many telemetry topics (devices) the link remembers as accepted; beyond, it parses.
_TELEMETRY_TOPICS = 4096
#: Builds a :class:`RawTelemetry` from a tuple without the named tuple's Python ``__new__``
#: (one per telemetry message, on paho's network thread).
_new_raw = RawTelemetry._make


class MqttLink:
    """A persistent-session MQTT connection for one agent; a context manager.

    >>> inbox: queue.Queue[Inbound] = queue.Queue(maxsize=1000)
    >>> with MqttLink(agent_id="a1", kitchen_id="k1", host="127.0.0.1", port=1883,
    ...               inbox=inbox) as link:  # doctest: +SKIP
    ...     link.publish_command("oven-1", command)
    """

    def __init__(
        self,
        *,
        agent_id: str,
        kitchen_id: str,
        host: str,
        port: int,
        inbox: queue.Queue[Inbound],
        session_expiry_s: int = 86_400,
        keepalive_s: int = 30,
        sink: DeviceSink | None = None,
        confirm: Callable[[DeviceEvent], None] | None = None,
    ) -> None:
        self.kitchen_id = kitchen_id
        #: Persists a ``step_confirmed`` before ``on_message`` returns (and paho acks it).
        self._confirm = confirm
        self.client_id = f"brigade-agent-{agent_id}"
        self.registry = DeviceRegistry()
        self.drops = DropCounter()
        self._host = host
        self._port = port
        self._inbox = inbox
        self._sink = sink
        #: Telemetry goes undecoded to a sink that decodes in batches (see :class:`DeviceSink`).
        self._submit_raw: Callable[[RawTelemetry], bool] | None = getattr(sink, "submit_raw", None)
        #: Topic -> device id of the kitchen's telemetry topics seen so far (bounded).
        self._telemetry_topics: dict[str, str] = {}
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._connections = 0
        self._status_topic = topic_for(kitchen_id, AGENT_DEVICE_ID, Channel.STATUS)
        paho_log = logging.getLogger(f"{__name__}.paho")
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            debug=paho_log.isEnabledFor(logging.DEBUG),
        )
        self._client.enable_logger(paho_log)
        self._rng = random.Random()
        self._jitter_reconnect()
        self._client.will_set(
            self._status_topic, encode_message(Status(state="offline")), qos=1, retain=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> MqttLink:
        """Connect in the background; paho's loop thread connects and reconnects."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=self._keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()
        return self

    def stop(self) -> None:
        """Say ``offline`` (a clean disconnect does not fire the Will) and disconnect."""
        self._stopping.set()
        try:
            if self._connected.is_set():
                info = self._client.publish(
                    self._status_topic,
                    encode_message(Status(state="offline", ts=time.time())),
                    qos=1,
                    retain=True,
                )
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    info.wait_for_publish(timeout=2.0)
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    def __enter__(self) -> MqttLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connections(self) -> int:
        """How many times the link has connected (1 + reconnects)."""
        return self._connections

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- outbound --------------------------------------------------------------------------

    def publish_command(self, device_id: str, command: Command) -> bool:
        """Publish ``command`` at QoS 1; ``False`` if the broker is not reachable right now.

        The caller need not retry at once: the executor re-sends the same command id when the
        ack does not come.
        """
        info = self._client.publish(
            topic_for(self.kitchen_id, device_id, Channel.CMD), encode_message(command), qos=1
        )
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- paho callbacks (paho's loop thread) ------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection", extra={"reason": str(reason_code)})
            return
        self._connections += 1
        # Subscribe again even when the session survived: a broker that lost its persistence
        # would otherwise leave the agent deaf.
        client.subscribe(
            subscription_for(self.kitchen_id), options=SubscribeOptions(qos=1, noLocal=True)
        )
        client.publish(
            self._status_topic,
            encode_message(Status(state="online", ts=time.time())),
            qos=1,
            retain=True,
        )
        self._connected.set()
        log.info(
            "connected to broker",
            extra={"session_present": bool(flags.session_present), "host": self._host},
        )

    def _jitter_reconnect(self) -> None:
        # paho doubles from min_delay up to max_delay without jitter; a fresh random start and
        # cap per outage spreads reconnects (paho reads both at every wait).
        self._client.reconnect_delay_set(
            min_delay=max(1, round(self._rng.uniform(0.5, 2.0))),
            max_delay=round(self._rng.uniform(20.0, 40.0)),
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: Any,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        self._jitter_reconnect()
        level = logging.INFO if self._stopping.is_set() else logging.WARNING
        log.log(level, "disconnected from broker", extra={"reason": str(reason_code)})

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # paho would stop its loop on an exception from a callback; nothing here may raise.
        try:
            self.handle_message(message.topic, bytes(message.payload))
        except Exception as exc:
            log.exception("unexpected error handling an MQTT message")
            self.drops.drop("internal_error", repr(exc))

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Decode one message and route it: registry, executor inbox, or a counted drop."""
        device_id = self._telemetry_topics.get(topic)  # nearly every message: one lookup
        if device_id is not None:
            self._telemetry(device_id, topic, payload)
            return
        try:
            parts = parse_topic(topic)
        except ProtocolError as exc:
            self.drops.drop(exc.reason, f"{topic}: {exc}")
            return
        if is_reserved_device_id(parts.device_id) or parts.kitchen_id != self.kitchen_id:
            return
        if parts.channel is Channel.TELEMETRY:
            if len(self._telemetry_topics) < _TELEMETRY_TOPICS:
                self._telemetry_topics[topic] = parts.device_id
            self._telemetry(parts.device_id, topic, payload)
            return
        self._decoded(parts, topic, payload)

    def _telemetry(self, device_id: str, topic: str, payload: bytes) -> None:
        """Telemetry from one of the kitchen's devices: queued undecoded when the sink decodes
        in batches, else decoded now."""
        raw = _new_raw((device_id, time.time(), payload, self._decode_telemetry))
        if self._submit_raw is not None:
            if not self._submit_raw(raw):
                self.drops.drop("ingest_full", f"{topic}: ingest queue full")
            return
        observed = self._decode_telemetry(raw)
        if observed is not None:
            self._submit(observed)

    def _decoded(self, parts: TopicParts, topic: str, payload: bytes) -> None:
        """Every other message of the kitchen's devices: decoded and routed now."""
        model = _MODELS[parts.channel]
        if not payload and parts.channel in (Channel.BIRTH, Channel.STATUS):
            self.registry.forget(parts.device_id)
            return
        try:
            decoded = decode_message(model, payload)
        except ProtocolError as exc:
            self.drops.drop(exc.reason, f"{topic}: {exc}")
            return
        if isinstance(decoded, _DEVICE_MESSAGES) and decoded.device_id != parts.device_id:
            self.drops.drop("device_mismatch", f"{topic}: device_id {decoded.device_id!r}")
            return
        if isinstance(decoded, Birth):
            self.registry.record_birth(parts.device_id, decoded)
            self._submit(
                StatusSeen(
                    device_id=parts.device_id,
                    link="mqtt",
                    at=time.time(),
                    kind=decoded.kind.value,
                    model=decoded.model,
                    firmware=decoded.firmware,
                )
            )
        elif isinstance(decoded, Status):
            self.registry.record_status(parts.device_id, decoded)
            self._submit(
                StatusSeen(
                    device_id=parts.device_id,
                    link="mqtt",
                    at=time.time(),
                    online=decoded.state == "online",
                    kind=self.registry.kind_of(parts.device_id),
                )
            )
        elif isinstance(decoded, DeviceEvent) and decoded.event == "corrective_action":
            action = _corrective_action(decoded)
            if action is None:
                self.drops.drop("invalid_message", f"{topic}: corrective_action without alert_id")
            else:
                self._submit(action)
        elif isinstance(decoded, DeviceEvent) and decoded.event == "probe_check":
            check = _probe_check(decoded)
            if check is None:
                self.drops.drop("invalid_message", f"{topic}: probe_check without its values")
            else:
                self._submit(check)
        elif isinstance(decoded, State | DeviceEvent):
            if isinstance(decoded, State):
                self.registry.record_state(parts.device_id, decoded)
            self._submit(
                Observed(
                    device_id=decoded.device_id,
                    link="mqtt",
                    seq=decoded.seq,
                    at=time.time(),
                    mode=decoded.mode.value if isinstance(decoded, State) else None,
                    event=(decoded.event, decoded.severity)
                    if isinstance(decoded, DeviceEvent)
                    else None,
                )
            )
        if (
            isinstance(decoded, DeviceEvent)
            and decoded.event == "step_confirmed"
            and self._confirm is not None
        ):
            # On disk before paho acknowledges the message: the executor reads it from there.
            self._confirm(decoded)
        if isinstance(decoded, Ack) or (
            isinstance(decoded, DeviceEvent) and decoded.event == "step_confirmed"
        ):
            try:
                self._inbox.put_nowait(decoded)
            except queue.Full:
                self.drops.drop("inbox_full", f"{topic}: executor inbox full")
        # Commands from other publishers (operator tools) are only validated.

    def _decode_telemetry(self, raw: RawTelemetry) -> Observed | None:
        """What a telemetry message observed, or ``None`` when it is dropped (and counted).

        Runs on the ingest thread for the ingest loop (see :class:`DeviceSink`), so it never
        raises: a flush must not lose the rest of its batch to one message.
        """
        try:
            decoded = decode_message(Telemetry, raw.payload)
        except ProtocolError as exc:
            self.drops.drop(exc.reason, f"{raw.device_id}/telemetry: {exc}")
            return None
        except Exception as exc:
            log.exception("unexpected error decoding telemetry")
            self.drops.drop("internal_error", repr(exc))
            return None
        if decoded.device_id != raw.device_id:
            where = f"{raw.device_id}/telemetry: device_id {decoded.device_id!r}"
            self.drops.drop("device_mismatch", where)
            return None
        observed = _observed(decoded, raw.at)
        if len(observed.readings) < len(decoded.readings):
            self.drops.drop("non_finite", f"{raw.device_id}/telemetry: NaN or infinite reading")
        return observed

    def _submit(self, item: Observed | StatusSeen | CorrectiveAction | ProbeCheck) -> None:
        if self._sink is not None and not self._sink.submit(item):
            self.drops.drop("ingest_full", f"{item.device_id}: ingest queue full")


def _corrective_action(event: DeviceEvent) -> CorrectiveAction | None:
    """A staff corrective action from a kitchen display: ``data={"alert_id", "action",
    "badge"}``; ``None`` when it names no alert or action."""
    alert_id, action, badge = (event.data.get(k) for k in ("alert_id", "action", "badge"))
    if not isinstance(alert_id, str) or not isinstance(action, str) or not action:
        return None
    return CorrectiveAction(
        alert_id=alert_id,
        action=action[:128],
        badge=badge if isinstance(badge, str) else None,
        at=time.time(),
        device_id=event.device_id,
    )


def _probe_check(event: DeviceEvent) -> ProbeCheck | None:
    """A probe accuracy check entered at a kitchen display: ``data={"probe", "reading_c",
    "reference_c", "badge"}`` (``probe`` defaults to the device's ``temp``); ``None`` when a
    value is missing or not a finite number."""
    reading = _finite(event.data.get("reading_c"))
    reference = _finite(event.data.get("reference_c"))
    probe, badge = event.data.get("probe", "temp"), event.data.get("badge")
    if reading is None or reference is None or not isinstance(probe, str):
        return None
    return ProbeCheck(
        device_id=event.device_id,
        probe=probe[:64] or "temp",
        reading_c=reading,
        reference_c=reference,
        badge=badge if isinstance(badge, str) else None,
        at=time.time(),
    )


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _observed(telemetry: Telemetry, received: float) -> Observed:
    """Telemetry as the ingest loop takes it: numeric readings, Fahrenheit made Celsius."""
    readings = []
    for reading in telemetry.readings:
        unit, value = reading.unit, reading.value
        if not math.isfinite(value):
            continue  # JSON parsers accept NaN; no probe reads it
        if unit == "F":
            unit, value = "C", (value - 32.0) * 5.0 / 9.0
        readings.append(
            ReadingIn(telemetry.device_id, reading.metric, unit, value, received, "mqtt")
        )
    return Observed(
        device_id=telemetry.device_id,
        link="mqtt",
        seq=telemetry.seq,
        at=received,
        readings=tuple(readings),
    )
