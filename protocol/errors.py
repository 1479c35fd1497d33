"""Errors raised by the protocol package.

    ProtocolError                 anything the wire contract refuses
    ├── UnsupportedVersion        a message's major schema version is not one we speak
    ├── MessageError              JSON that is not a valid message of the expected kind
    ├── TopicError                an MQTT topic outside the brigade/v1 tree
    └── FrameError                a serial line frame that must be dropped (``reason`` says why)

Every error carries a short machine-readable ``reason`` so callers can count drops by reason.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Base of every protocol error; ``reason`` is a stable, metric-friendly code."""

    reason: str = "protocol_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnsupportedVersion(ProtocolError):
    """The message's major schema version is unknown to this side."""

    reason = "unsupported_version"


class MessageError(ProtocolError):
    """The payload is not JSON, or does not validate against the expected model."""

    reason = "invalid_message"


class TopicError(ProtocolError):
    """The topic does not match ``brigade/v1/{kitchen}/{device}/{channel}``."""

    reason = "invalid_topic"


class FrameError(ProtocolError):
    """A serial frame that is dropped: bad checksum, field count, length or encoding."""

    reason = "malformed_frame"
