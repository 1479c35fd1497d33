"""The agent's HTTP link to the control plane: enroll once, then sync; and the work doorbell.

All network I/O goes through one ``httpx.Client`` whose ``transport`` can be swapped (tests use
``httpx.MockTransport``); the work doorbell's long poll has its own ``httpx.AsyncClient``
(:class:`WorkDoorbellClient`), so stopping the agent cancels a held request at once. Foreign
errors are translated here into :mod:`edge_agent.errors`:

=================================  ===========================================
what happened                      raised
=================================  ===========================================
TLS handshake / certificate        :class:`TLSFailure`
DNS, refused, timeout              :class:`ControlPlaneUnreachable`
401/403 on sync or doorbell        :class:`CredentialRejected`
4xx on enroll                      :class:`EnrollmentRefused` (server's detail)
429/503                            :class:`RetryLater` (``delay_s`` from Retry-After)
anything else not 2xx, bad body    :class:`ControlPlaneError` (``status`` 404: no doorbell)
=================================  ===========================================

>>> with ControlPlaneClient("https://cp.example", credential="...") as cp:  # doctest: +SKIP
...     response = cp.sync(request)
"""

from __future__ import annotations

import email.utils
import ssl
import time
from typing import Protocol, TypeVar

import httpx

from edge_agent.errors import (
    ControlPlaneError,
    ControlPlaneUnreachable,
    CredentialRejected,
    EnrollmentRefused,
    RetryLater,
    TLSFailure,
)
from protocol import (
    EnrollRequest,
    EnrollResponse,
    MessageError,
    SyncRequest,
    SyncResponse,
    WorkResponse,
    decode_message,
    encode_message,
)
from protocol.base import WireModel

M = TypeVar("M", bound=WireModel)

#: Used when a 429/503 carries no usable Retry-After.
DEFAULT_RETRY_AFTER_S = 5.0
#: A server asking for more than this is capped, so a typo cannot park an agent for a day.
MAX_RETRY_AFTER_S = 600.0
#: How much longer than the wait it asked for the agent gives a doorbell answer to arrive.
DOORBELL_GRACE_S = 10.0


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> parse_retry_after("7", now=0.0)
    7.0
    >>> parse_retry_after("soon", now=0.0) is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


class ControlPlaneLink(Protocol):
    """What the sync loop needs from the control plane (the seam; fakes implement it)."""

    def sync(self, request: SyncRequest) -> SyncResponse: ...


class WorkDoorbellLink(Protocol):
    """The work doorbell's long poll (the seam of :class:`edge_agent.sync.DoorbellWatch`)."""

    async def work(self, *, since: str | None, wait_s: float) -> WorkResponse: ...


class ControlPlaneClient:
    """Enrollment and sync against ``base_url``; a context manager that closes its connections."""

    def __init__(
        self,
        base_url: str,
        *,
        credential: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        headers = {"User-Agent": "brigade-agent"}
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        self._client = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enroll(self, *, token: str, name: str, agent_version: str) -> EnrollResponse:
        """Redeem a one-time enrollment token for an agent id and credential."""
        request = EnrollRequest(token=token, name=name, agent_version=agent_version)
        response = self._post("/v1/agents/enroll", request)
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise EnrollmentRefused(
                f"the control plane refused the enrollment token: {_detail(response)}",
                status=response.status_code,
            )
        return self._parse(response, EnrollResponse)

    def sync(self, request: SyncRequest) -> SyncResponse:
        """One sync round trip: heartbeat, events, renewals, lease requests."""
        response = self._post("/v1/agents/sync", request)
        if response.status_code in (401, 403):
            raise CredentialRejected(
                f"the control plane refused this agent's credential: {_detail(response)}",
                status=response.status_code,
            )
        return self._parse(response, SyncResponse)

    def _post(self, path: str, body: WireModel) -> httpx.Response:
        try:
            return self._client.post(
                path,
                content=encode_message(body),
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:
            raise _unreachable(exc, f"{self._client.base_url}{path.lstrip('/')}") from exc

    def _parse(self, response: httpx.Response, model: type[M]) -> M:
        return _parse(response, model)


class WorkDoorbellClient:
    """``GET /v1/agents/work``: wait for the kitchen's work version to differ from ``since``.

    Async so that a stop cancels a held request at once (a blocking read could hold the
    agent's shutdown for the whole wait). ``transport`` must be an async one (an
    ``httpx.MockTransport`` is both).

    >>> bell = WorkDoorbellClient("https://cp.example", credential="...")  # doctest: +SKIP
    >>> answer = await bell.work(since=None, wait_s=20)  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        *,
        credential: str,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"User-Agent": "brigade-agent", "Authorization": f"Bearer {credential}"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> WorkDoorbellClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def work(self, *, since: str | None, wait_s: float) -> WorkResponse:
        """The kitchen's work version once it differs from ``since``, or after ``wait_s``."""
        params: dict[str, str] = {"wait_s": f"{max(wait_s, 0.0):.3f}"}
        if since is not None:
            params["since"] = since
        # The read may take the whole wait; the server answers by then, plus a grace.
        timeout = httpx.Timeout(self._connect_timeout_s, read=wait_s + DOORBELL_GRACE_S)
        try:
            response = await self._client.get("/v1/agents/work", params=params, timeout=timeout)
        except httpx.TransportError as exc:
            raise _unreachable(exc, f"{self._client.base_url}v1/agents/work") from exc
        if response.status_code in (401, 403):
            raise CredentialRejected(
                f"the control plane refused this agent's credential: {_detail(response)}",
                status=response.status_code,
            )
        return _parse(response, WorkResponse)


def _unreachable(exc: httpx.TransportError, url: str) -> ControlPlaneError:
    """The error of ours for a transport failure talking to ``url``."""
    if _is_tls_failure(exc):
        return TLSFailure(f"TLS failure talking to {url}: {exc}")
    return ControlPlaneUnreachable(
        f"control plane unreachable at {url}: {exc or type(exc).__name__}"
    )


def _parse(response: httpx.Response, model: type[M]) -> M:
    """The answer's body as ``model``; 429/503 are :class:`RetryLater`, other failures
    :class:`ControlPlaneError` with the status."""
    status = response.status_code
    if status in (429, 503):
        delay = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
        raise RetryLater(
            f"control plane overloaded ({status}); retry later",
            status=status,
            delay_s=DEFAULT_RETRY_AFTER_S if delay is None else delay,
        )
    if not 200 <= status < 300:
        raise ControlPlaneError(
            f"control plane answered {status}: {_detail(response)}", status=status
        )
    try:
        return decode_message(model, response.content)
    except MessageError as exc:
        raise ControlPlaneError(
            f"control plane sent an invalid {model.__name__}: {exc}", status=status
        ) from exc


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of a problem+json body, else a bounded excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if isinstance(detail, str):
            return detail
        if detail is not None:
            return str(detail)[:200]
    return response.text[:200]


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc)
