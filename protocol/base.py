"""The base of every wire model: versioned, immutable, tolerant of unknown optional fields."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from protocol.errors import MessageError
from protocol.version import SCHEMA_VERSION, check_version

#: Upper bound of any single JSON message on MQTT or in a sync batch element.
MAX_MESSAGE_BYTES = 64 * 1024

#: A run of digits long enough to be an integer beyond a double's range. ``json.loads`` keeps
#: such an integer exact and a ``float`` field then rejects it, where pydantic's own JSON parser
#: turns it into ``inf``: the one number the two parsers read differently (below 309 digits
#: both round alike), so a payload holding one is decoded by the reference path.
_OVERFLOWING_DIGITS = re.compile(rb"[0-9]{309}")

#: A safe identifier: kitchen, device, agent, station ids (also topic levels).
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: A free-form but bounded token (command ids, task ids, reasons).
Token = Annotated[str, StringConstraints(min_length=1, max_length=128)]
#: Unix time in seconds (UTC). Devices and agents stamp their own clocks; receivers re-stamp.
Timestamp = Annotated[float, Field(ge=0, le=32503680000)]
#: A parameter or data value carried in commands and acks.
Scalar = str | int | float | bool

M = TypeVar("M", bound="WireModel")


class WireModel(BaseModel):
    """Every message carries ``v``; unknown fields from newer minors are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: str = Field(default=SCHEMA_VERSION, description="schema version MAJOR.MINOR")

    @field_validator("v")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        # Nearly every message carries the current version: no need to parse it each time.
        return value if value == SCHEMA_VERSION else check_version(value)


def encode_message(message: WireModel) -> bytes:
    """Serialise a message to compact UTF-8 JSON."""
    return message.model_dump_json(exclude_none=True).encode()


def decode_message(model: type[M], payload: bytes | str) -> M:
    """Parse and validate ``payload`` as ``model``.

    Raises :class:`~protocol.errors.UnsupportedVersion` for an unknown major version and
    :class:`~protocol.errors.MessageError` (``reason`` = ``too_large``, ``not_json`` or
    ``invalid_message``) for anything else.

    A valid message is parsed once by pydantic's JSON parser (half the cost: telemetry floods
    come through here); anything it refuses goes through :func:`_decode_checked`, which says
    why with the same reasons as before, so the fast path never changes an outcome.
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(
            f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
            reason="too_large",
        )
    if not _OVERFLOWING_DIGITS.search(raw):
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            pass  # refused: the checked path below finds out why
    return _decode_checked(model, raw)


def _decode_checked(model: type[M], raw: bytes) -> M:
    """The reference decoding, step by step, so a refusal carries its reason: ``json.loads``,
    an object, a supported major version, then the model."""
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"message is not UTF-8 JSON: {exc}", reason="not_json") from exc
    except RecursionError as exc:
        # Thousands of nested brackets fit in the size limit; no message of ours nests so deep.
        raise MessageError("message nests too deeply", reason="invalid_message") from exc
    if not isinstance(data, dict):
        raise MessageError("message must be a JSON object", reason="invalid_message")
    # Check the version first so a newer major is reported as such, not as a schema mismatch.
    check_version(data.get("v", SCHEMA_VERSION))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise MessageError(
            f"invalid {model.__name__}: {where}: {first['msg']}", reason="invalid_message"
        ) from exc
