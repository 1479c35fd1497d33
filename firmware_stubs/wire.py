"""The firmware's own small encoder and validator for the Brigade MQTT contract.

Firmware cannot carry pydantic, so this module re-states the few rules a device needs (topic
layout, schema version, identifier and timestamp bounds, command shape) in plain Python that
MicroPython also runs. The conformance tests prove it agrees with :mod:`protocol` and the shared
vectors, so the two cannot drift apart silently.

>>> topic("k1", "oven-1", "ack")
'brigade/v1/k1/oven-1/ack'
>>> encode({"v": "1.0", "state": "offline", "ts": None})
b'{"v":"1.0","state":"offline"}'
"""

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware_stubs.hal import JsonObject

SCHEMA_VERSION = "1.0"
SUPPORTED_MAJORS = (1,)
TOPIC_ROOT = "brigade/v1"
#: Same bound as the protocol's MAX_MESSAGE_BYTES: anything larger is dropped unread.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TIMESTAMP = 32503680000
MAX_TOKEN = 128
MAX_IDENT = 64
MAX_PARAMS = 32
MAX_REASON = 256
#: Physical bounds of a temperature on the wire (protocol State.temp_c).
MIN_TEMP_C = -100.0
MAX_TEMP_C = 600.0

_ASCII_DIGITS = "0123456789"
_IDENT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + _ASCII_DIGITS + "_-"


class Dropped(ValueError):
    """A payload the device drops without an answer: it has no usable ``command_id``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Rejected(ValueError):
    """A command the device answers with ack ``rejected``; ``reason`` is the ack's reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:MAX_REASON]


def topic(kitchen_id: str, device_id: str, channel: str) -> str:
    """The topic of ``channel`` for one device: ``brigade/v1/{kitchen}/{device}/{channel}``."""
    return TOPIC_ROOT + "/" + kitchen_id + "/" + device_id + "/" + channel


def encode(message: "JsonObject") -> bytes:
    """Compact UTF-8 JSON, leaving out fields whose value is ``None`` (as the protocol does)."""
    kept = {}
    for key, value in message.items():
        if value is not None:
            kept[key] = value
    return json.dumps(kept, separators=(",", ":")).encode()


def is_ident(value: object) -> bool:
    """Whether ``value`` is a safe id (also a topic level): 1-64 of ``[A-Za-z0-9_-]``."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_IDENT:
        return False
    return all(char in _IDENT_CHARS for char in value)


def is_token(value: object) -> bool:
    """Whether ``value`` is a bounded token (command id, task id, action)."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_TOKEN


def is_number(value: object) -> bool:
    """A JSON number that is finite; ``true``/``false`` are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # json.loads accepts NaN and Infinity literals; neither is a number on the wire.
    return -1e300 < value < 1e300  # also False for NaN, which compares false with anything


def is_timestamp(value: object) -> bool:
    """Unix seconds within the protocol's bounds."""
    return is_number(value) and 0 <= value <= MAX_TIMESTAMP  # type: ignore[operator]


def _ascii_digits(text: str) -> bool:
    if not text:
        return False
    return all(char in _ASCII_DIGITS for char in text)


def version_error(value: object) -> str | None:
    """``None`` if the schema version ``value`` is spoken here, else why not."""
    if not isinstance(value, str):
        return "schema version must be a string like '1.0'"
    dot = value.find(".")
    if dot < 0 or not _ascii_digits(value[:dot]) or not _ascii_digits(value[dot + 1 :]):
        return "schema version must look like 'MAJOR.MINOR'"
    if int(value[:dot]) not in SUPPORTED_MAJORS:
        return "schema major version " + value[:dot] + " is not supported"
    return None


def decode_object(payload: bytes) -> "JsonObject":
    """Parse ``payload`` as a JSON object or raise :class:`Dropped` with the protocol's reason."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise Dropped("too_large")
    try:
        data = json.loads(payload.decode())
    except (UnicodeError, ValueError) as exc:
        raise Dropped("not_json") from exc
    if not isinstance(data, dict):
        raise Dropped("invalid_message")
    return data


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, bool)) or is_number(value)


def parse_command(data: "JsonObject") -> "JsonObject":
    """Validate a decoded ``cmd`` message (its ``command_id`` already checked).

    Returns ``{"command_id", "action", "params", "issued_at", "expires_at", "task_id",
    "step"}``; raises :class:`Rejected` with a reason the agent can log and count.
    """
    why = version_error(data.get("v", SCHEMA_VERSION))
    if why is not None:
        raise Rejected("unsupported_version: " + why)
    action = data.get("action")
    if not is_token(action):
        raise Rejected("invalid_message: action must be a non-empty string")
    params = data.get("params", {})
    if not isinstance(params, dict) or len(params) > MAX_PARAMS:
        raise Rejected("invalid_message: params must be an object of at most 32 entries")
    for name in params:
        if not _is_scalar(params[name]):
            raise Rejected("invalid_message: params." + str(name) + " must be a scalar")
    for name in ("issued_at", "expires_at"):
        if not is_timestamp(data.get(name)):
            raise Rejected("invalid_message: " + name + " must be unix seconds")
    task_id = data.get("task_id")
    if task_id is not None and not is_token(task_id):
        raise Rejected("invalid_message: task_id must be a non-empty string")
    step = data.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise Rejected("invalid_message: step must be a non-negative integer")
    return {
        "command_id": data["command_id"],
        "action": action,
        "params": params,
        "issued_at": data["issued_at"],
        "expires_at": data["expires_at"],
        "task_id": task_id,
        "step": step,
    }


def number_param(params: "JsonObject", name: str, low: float, high: float) -> float:
    """The required numeric parameter ``name`` within ``[low, high]``, else :class:`Rejected`."""
    value = params.get(name)
    if not is_number(value) or value is None:
        raise Rejected("invalid_params: " + name + " is required and must be a number")
    if not low <= value <= high:
        raise Rejected(
            "invalid_params: " + name + " must be between " + str(low) + " and " + str(high)
        )
    return float(value)


def reject_unknown_params(params: "JsonObject", known: "tuple[str, ...]") -> None:
    """A device refuses parameters it cannot honour rather than silently ignoring them."""
    for name in params:
        if name not in known:
            raise Rejected("invalid_params: unknown parameter " + str(name))


def plausible_temp(value: float | None) -> float | None:
    """A reading rounded to 0.1 °C, or ``None`` if it is outside physics (a broken sensor)."""
    if value is None or not is_number(value) or not MIN_TEMP_C <= value <= MAX_TEMP_C:
        return None
    return round(float(value), 1)
