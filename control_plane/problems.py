"""``application/problem+json`` answers (RFC 9457) with stable ``type`` URIs.

>>> problem_body(404, "not-found", "Not found", "no order o-1")["type"]
'https://brigade.example/problems/not-found'
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.errors import BrigadeError, Unauthorized
from control_plane.problem_json import (
    PROBLEM_MEDIA_TYPE,
    encode_problem,
    error_problem,
    problem_body,
)

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


def problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    """A problem answer with the right media type."""
    return Response(
        content=encode_problem(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _brigade_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BrigadeError)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return problem_response(error_problem(exc), headers=headers or None)


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


_DESCRIPTIONS = {
    400: "Bad request (problem+json)",
    401: "No credential, or an unknown one (problem+json)",
    403: "The credential may not do this (problem+json)",
    404: "No such resource (problem+json)",
    409: "Conflict with the resource's current state (problem+json)",
    413: "Request body larger than the configured bound (problem+json)",
    422: "Validation failed or request refused (problem+json)",
    429: "Overloaded: retry after the Retry-After header's seconds (problem+json)",
    500: "Unexpected failure (problem+json)",
    503: "Unavailable for now: retry after the Retry-After header's seconds (problem+json)",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the problem answers it may give."""
    from control_plane.views import Problem

    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "model": Problem,
        }
        for status in statuses
    }


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the generated OpenAPI say what the server really answers.

    FastAPI documents validation errors as ``application/json`` ``HTTPValidationError``; ours
    are problem+json. Every operation may also answer 413 (body bound, when it has a body) and
    500, which the middleware and the catch-all handler produce.
    """
    problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if status.isdigit() and int(status) >= 400:
                    response["content"] = problem
            if "422" in responses:
                responses["422"]["description"] = _DESCRIPTIONS[422]
            if "requestBody" in operation or "parameters" in operation:
                responses.setdefault("422", {"description": _DESCRIPTIONS[422]})
                responses["422"]["content"] = problem
            if "requestBody" in operation:
                responses.setdefault("413", {"description": _DESCRIPTIONS[413], "content": problem})
            responses.setdefault("500", {"description": _DESCRIPTIONS[500], "content": problem})
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(BrigadeError, _brigade_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
