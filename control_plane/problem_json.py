"""``application/problem+json`` bodies (RFC 9457) with stable ``type`` URIs, without the web
framework: the intake writer process builds its answers with these and imports no FastAPI.

>>> problem_body(404, "not-found", "Not found", "no order o-1")["type"]
'https://brigade.example/problems/not-found'
"""

from __future__ import annotations

import json
from typing import Any

from control_plane.errors import BrigadeError

PROBLEM_BASE = "https://brigade.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of one problem answer."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if reason is not None:
        body["reason"] = reason
    body.update(extra or {})
    return body


def encode_problem(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the bytes stored for idempotent replays too."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def error_problem(exc: BrigadeError) -> dict[str, Any]:
    """The problem body of one of our errors."""
    return problem_body(exc.status, exc.slug, exc.title, exc.detail, reason=exc.reason)
