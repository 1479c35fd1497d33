"""``application/problem+json`` answers (RFC 9457) with stable ``type`` URIs.

>>> problem_body(404, "not-found", "Not found", "no order o-1")["type"]
'https://brigade.example/problems/not-found'
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.errors import BrigadeError, Unauthorized

PROBLEM_BASE = "https://brigade.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("brigade.problems")

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Request body too large"),
}


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


def problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    """A problem answer with the right media type."""
    return Response(
        content=encode_problem(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def error_problem(exc: BrigadeError) -> dict[str, Any]:
    """The problem body of one of our errors."""
    return problem_body(exc.status, exc.slug, exc.title, exc.detail, reason=exc.reason)


def _brigade_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BrigadeError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return problem_response(error_problem(exc), headers=headers)


def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"]) or "request"
    body = problem_body(
        422,
        "validation-error",
        "Request validation failed",
        f"{where}: {first['msg']}",
        extra={"errors": errors},
    )
    return problem_response(body)


def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    body = problem_body(exc.status_code, slug, title, str(exc.detail))
    return problem_response(body, headers=dict(exc.headers or {}))


def _unexpected_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    body = problem_body(500, "internal-error", "Internal error", "an unexpected error occurred")
    return problem_response(body)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(BrigadeError, _brigade_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
