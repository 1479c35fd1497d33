"""Errors of the control plane. Each maps to one ``application/problem+json`` answer.

    BrigadeError                     anything the control plane refuses (``status``, ``slug``)
    ├── BadRequest                   400 a request that cannot be understood
    │   └── IdempotencyKeyMissing    400 ``POST /v1/orders`` without ``Idempotency-Key``
    ├── Unauthorized                 401 no credential, or one we do not know
    ├── Forbidden                    403 a known credential that may not do this
    │   ├── AgentRevoked             403 the agent's credential was revoked
    │   └── EnrollmentTokenRefused   403 the enrollment token was used or has expired
    ├── NotFound                     404 no such resource
    ├── Conflict                     409 the resource already exists or is busy
    │   ├── IdempotencyKeyInFlight   409 the first request with this key is still running
    │   ├── StateConflict            409 not allowed in the current state (``reason`` says why)
    │   ├── StockInsufficient        409 the target kitchen lacks the stock a task needs
    │   └── SeqReused                409 an agent sent an acked ``seq`` with another event id
    ├── PayloadTooLarge              413 the body exceeds the configured bound
    ├── Unprocessable                422 well-formed but semantically refused
    │   ├── IdempotencyKeyReuse      422 same key, different body
    │   └── OrderRejected            422 the order cannot be made in time (``reason`` says why)
    ├── OrdersShed                   429 backpressure sheds new orders (``Retry-After``)
    ├── StoreError                   500 the SQLite store failed (translated at the seam)
    └── IntakeUnavailable            503 the intake writer process is restarting (``Retry-After``)

``slug`` is the last segment of the problem ``type`` URI
(``https://brigade.example/problems/<slug>``) and never changes once published.
"""

from __future__ import annotations

from typing import Any


class BrigadeError(Exception):
    """Base of every control-plane error."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"
    #: Seconds for a ``Retry-After`` header, when retrying later can succeed.
    retry_after_s: int | None = None

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (the intake writer process sends its errors to the server): the default
        # would call ``cls(detail)`` and lose ``reason`` and the subclasses' own fields.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(
    cls: type[BrigadeError], args: tuple[Any, ...], fields: dict[str, Any]
) -> BrigadeError:
    """An error as it was pickled (see :meth:`BrigadeError.__reduce__`)."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error


class BadRequest(BrigadeError):
    status, slug, title = 400, "bad-request", "Bad request"


class IdempotencyKeyMissing(BadRequest):
    slug, title = "idempotency-key-missing", "Idempotency-Key header required"


class Unauthorized(BrigadeError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(BrigadeError):
    status, slug, title = 403, "forbidden", "Not allowed"


class AgentRevoked(Forbidden):
    slug, title = "agent-revoked", "Agent credential revoked"


class EnrollmentTokenRefused(Forbidden):
    slug, title = "enrollment-token-refused", "Enrollment token refused"


class NotFound(BrigadeError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(BrigadeError):
    status, slug, title = 409, "conflict", "Conflict"


class IdempotencyKeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is in flight"
    retry_after_s = 1


class StateConflict(Conflict):
    slug, title = "state-conflict", "Not allowed in the resource's current state"


class StockInsufficient(Conflict):
    slug, title = "stock-insufficient", "Not enough stock at the target kitchen"


class SeqReused(Conflict):
    slug, title = "seq-reused", "Event sequence number reused with a different event"


class PayloadTooLarge(BrigadeError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class Unprocessable(BrigadeError):
    status, slug, title = 422, "unprocessable", "Request refused"


class IdempotencyKeyReuse(Unprocessable):
    slug, title = "idempotency-key-reuse", "Idempotency-Key reused with a different body"


class OrderRejected(Unprocessable):
    slug, title = "order-rejected", "Order rejected"


class OrdersShed(BrigadeError):
    status, slug, title = 429, "orders-shed", "Not taking new orders now"

    def __init__(self, detail: str, *, reason: str, retry_after_s: int) -> None:
        super().__init__(detail, reason=reason)
        self.retry_after_s = retry_after_s


class StoreError(BrigadeError):
    status, slug, title = 500, "store-error", "Storage failure"


class IntakeUnavailable(BrigadeError):
    """The process that decides orders stopped (it is restarted at once): whether an order in
    progress was committed is unknown, so the client retries with the same ``Idempotency-Key``
    and gets the order's answer either way."""

    status, slug, title = 503, "intake-unavailable", "Order intake restarting"
    retry_after_s = 1
