"""MQTT topic tree of one kitchen: ``brigade/v1/{kitchen}/{device}/{channel}``.

Pure functions, no I/O. Identifiers are restricted to ``[A-Za-z0-9_-]`` (1..64 chars) so that no
id can smuggle a ``/``, ``+`` or ``#`` into a topic.

>>> topic_for("k1", "oven-1", Channel.STATE)
'brigade/v1/k1/oven-1/state'
>>> parse_topic("brigade/v1/k1/oven-1/ack").channel
<Channel.ACK: 'ack'>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from protocol.errors import TopicError

ROOT = "brigade"
TOPIC_VERSION = "v1"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Channel(StrEnum):
    """The last topic level: what a message on that topic is."""

    BIRTH = "birth"
    STATUS = "status"
    STATE = "state"
    TELEMETRY = "telemetry"
    EVENT = "event"
    CMD = "cmd"
    ACK = "ack"


#: The agent's own pseudo-device: its retained ``status`` (Last Will ``offline``) lives on
#: ``brigade/v1/{kitchen}/agent/status``. No device may use a reserved id.
AGENT_DEVICE_ID = "agent"
RESERVED_DEVICE_IDS = frozenset({AGENT_DEVICE_ID})

#: Channels whose messages the device publishes retained (the latest value survives reconnects).
RETAINED_CHANNELS = frozenset({Channel.BIRTH, Channel.STATUS, Channel.STATE})


@dataclass(frozen=True, slots=True)
class TopicParts:
    """A parsed topic."""

    kitchen_id: str
    device_id: str
    channel: Channel


def validate_id(value: str, what: str) -> str:
    """Return ``value`` if it is a safe topic level, else raise :class:`TopicError`."""
    if not ID_PATTERN.match(value):
        raise TopicError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_' or '-'",
            reason="invalid_id",
        )
    return value


def is_reserved_device_id(device_id: str) -> bool:
    """Whether ``device_id`` is reserved (readers ignore devices that claim one).

    >>> is_reserved_device_id("agent"), is_reserved_device_id("oven-1")
    (True, False)
    """
    return device_id in RESERVED_DEVICE_IDS


def topic_for(kitchen_id: str, device_id: str, channel: Channel) -> str:
    """Build the topic a message of ``channel`` for ``device_id`` is published on."""
    validate_id(kitchen_id, "kitchen id")
    validate_id(device_id, "device id")
    return f"{ROOT}/{TOPIC_VERSION}/{kitchen_id}/{device_id}/{Channel(channel).value}"


def subscription_for(kitchen_id: str, channel: Channel | None = None, device_id: str = "+") -> str:
    """A subscription filter: every device (``+``) or one, one channel or all (``+``)."""
    validate_id(kitchen_id, "kitchen id")
    if device_id != "+":
        validate_id(device_id, "device id")
    last = "+" if channel is None else Channel(channel).value
    return f"{ROOT}/{TOPIC_VERSION}/{kitchen_id}/{device_id}/{last}"


@lru_cache(maxsize=4096)
def parse_topic(topic: str) -> TopicParts:
    """Split a concrete topic into its parts; raise :class:`TopicError` if it is not ours.

    Cached (bounded): a kitchen has a few hundred topics and every message parses its own.
    Refusals are not cached, so a stream of bad topics costs the same as before, never memory.
    """
    levels = topic.split("/")
    if len(levels) != 5 or levels[0] != ROOT:
        raise TopicError(f"topic {topic!r} is not brigade/v1/<kitchen>/<device>/<channel>")
    if levels[1] != TOPIC_VERSION:
        raise TopicError(
            f"topic version {levels[1]!r} is not supported (expected {TOPIC_VERSION})",
            reason="unsupported_version",
        )
    kitchen_id = validate_id(levels[2], "kitchen id")
    device_id = validate_id(levels[3], "device id")
    try:
        channel = Channel(levels[4])
    except ValueError as exc:
        raise TopicError(f"unknown channel {levels[4]!r} in topic {topic!r}") from exc
    return TopicParts(kitchen_id=kitchen_id, device_id=device_id, channel=channel)
