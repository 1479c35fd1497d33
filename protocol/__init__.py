"""Brigade's wire contract: the one source of truth for every message that crosses a process.

The package imports nothing of Brigade's own. Everything else (agent, control plane, firmware
stubs, simulators) imports from here, never the other way round.

>>> from protocol import Command, topic_for, Channel
>>> topic_for("k1", "oven-1", Channel.CMD)
'brigade/v1/k1/oven-1/cmd'
"""

from protocol.errors import (
    FrameError,
    MessageError,
    ProtocolError,
    TopicError,
    UnsupportedVersion,
)
from protocol.events import (
    AlertRaised,
    AlertResolved,
    EventEnvelope,
    EventType,
    ReadingsSummary,
    StepDone,
    StepStarted,
    TaskDone,
    TaskFailed,
    TaskReleased,
    TaskStarted,
    parse_event_payload,
)
from protocol.messages import (
    Ack,
    AckResult,
    Birth,
    Command,
    DeviceEvent,
    DeviceKind,
    DeviceMode,
    State,
    Status,
    Telemetry,
    command_id_for,
    decode_message,
    encode_message,
)
from protocol.serial_frames import Frame, FrameType, decode_frame, encode_frame
from protocol.sync_api import (
    Cancellation,
    EnrollRequest,
    EnrollResponse,
    Heartbeat,
    Lease,
    LeaseRenewal,
    RecipeStep,
    SyncRequest,
    SyncResponse,
    WorkResponse,
)
from protocol.topics import (
    AGENT_DEVICE_ID,
    Channel,
    TopicParts,
    is_reserved_device_id,
    parse_topic,
    subscription_for,
    topic_for,
)
from protocol.version import SCHEMA_VERSION, check_version

__all__ = [
    "AGENT_DEVICE_ID",
    "SCHEMA_VERSION",
    "Ack",
    "AckResult",
    "AlertRaised",
    "AlertResolved",
    "Birth",
    "Cancellation",
    "Channel",
    "Command",
    "DeviceEvent",
    "DeviceKind",
    "DeviceMode",
    "EnrollRequest",
    "EnrollResponse",
    "EventEnvelope",
    "EventType",
    "Frame",
    "FrameError",
    "FrameType",
    "Heartbeat",
    "Lease",
    "LeaseRenewal",
    "MessageError",
    "ProtocolError",
    "ReadingsSummary",
    "RecipeStep",
    "State",
    "Status",
    "StepDone",
    "StepStarted",
    "SyncRequest",
    "SyncResponse",
    "TaskDone",
    "TaskFailed",
    "TaskReleased",
    "TaskStarted",
    "Telemetry",
    "TopicError",
    "TopicParts",
    "UnsupportedVersion",
    "WorkResponse",
    "check_version",
    "command_id_for",
    "decode_frame",
    "decode_message",
    "encode_frame",
    "encode_message",
    "is_reserved_device_id",
    "parse_event_payload",
    "parse_topic",
    "subscription_for",
    "topic_for",
]
