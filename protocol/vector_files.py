"""Shared test vectors: valid and invalid messages and frames every side must agree on.

The files under ``protocol/vectors/`` are data, not code, so the agent, the firmware stubs, the
simulators and any other implementation run the same cases:

* ``mqtt.json``: ``{"name", "channel", "payload", "valid", "reason"?}``; ``payload`` is the
  exact JSON text (or ``payload_hex`` for bytes that are not text).
* ``serial.json``: ``{"name", "line" | "line_hex", "valid", "reason"?, "type"?, "fields"?}``.
* ``sync.json``: ``{"name", "model", "payload", "valid", "reason"?}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).parent / "vectors"


@dataclass(frozen=True, slots=True)
class Vector:
    """One test case: the raw bytes and what any conforming reader must conclude."""

    name: str
    raw: bytes
    valid: bool
    reason: str | None
    meta: dict[str, Any]


def load(kind: str) -> list[Vector]:
    """Load ``vectors/<kind>.json`` (``mqtt``, ``serial`` or ``sync``)."""
    cases: list[dict[str, Any]] = json.loads((VECTOR_DIR / f"{kind}.json").read_text())
    vectors = []
    for case in cases:
        if "payload_hex" in case or "line_hex" in case:
            raw = bytes.fromhex(case.get("payload_hex") or case["line_hex"])
        elif "payload" in case:
            raw = case["payload"].encode()
        else:
            raw = case["line"].encode()
        meta = {
            k: v
            for k, v in case.items()
            if k not in {"name", "payload", "payload_hex", "line", "line_hex", "valid", "reason"}
        }
        vectors.append(
            Vector(
                name=case["name"],
                raw=raw,
                valid=case["valid"],
                reason=case.get("reason"),
                meta=meta,
            )
        )
    return vectors
