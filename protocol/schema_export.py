"""JSON Schemas generated from the models, checked in under ``protocol/schemas/``.

Regenerate after changing a model::

    python -m protocol.schema_export

A test compares the checked-in files with :func:`generate` and fails on any drift, so the
schemas other implementations (firmware in C, a partner's integration) read are never stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from protocol.events import PAYLOAD_MODELS, EventEnvelope
from protocol.messages import Ack, Birth, Command, DeviceEvent, State, Status, Telemetry
from protocol.sync_api import (
    EnrollRequest,
    EnrollResponse,
    Lease,
    SyncRequest,
    SyncResponse,
    WorkResponse,
)

SCHEMA_DIR = Path(__file__).parent / "schemas"

#: Every model with a published schema, by file stem.
MODELS: dict[str, type[BaseModel]] = {
    "mqtt.birth": Birth,
    "mqtt.status": Status,
    "mqtt.state": State,
    "mqtt.telemetry": Telemetry,
    "mqtt.event": DeviceEvent,
    "mqtt.cmd": Command,
    "mqtt.ack": Ack,
    "sync.enroll_request": EnrollRequest,
    "sync.enroll_response": EnrollResponse,
    "sync.lease": Lease,
    "sync.request": SyncRequest,
    "sync.response": SyncResponse,
    "sync.work_response": WorkResponse,
    "event.envelope": EventEnvelope,
    **{f"event.payload.{name}": model for name, model in PAYLOAD_MODELS.items()},
}


def generate() -> dict[str, str]:
    """Return ``{file name: schema JSON text}`` for every published model."""
    out: dict[str, str] = {}
    for stem, model in MODELS.items():
        schema: dict[str, Any] = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://brigade.example/schemas/v1/{stem}.json"
        out[f"{stem}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema into ``directory`` and remove stale ones; return the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas = generate()
    for stale in directory.glob("*.json"):
        if stale.name not in schemas:
            stale.unlink()
    written = []
    for name, text in schemas.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main() -> int:
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
