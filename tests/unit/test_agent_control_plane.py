"""The control-plane link (sync and the work doorbell): foreign errors translated at the seam;
backoff schedule."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from edge_agent.backoff import Backoff, backoff_delay
from edge_agent.errors import (
    ControlPlaneError,
    ControlPlaneUnreachable,
    CredentialRejected,
    EnrollmentRefused,
    RetryLater,
    TLSFailure,
)
from edge_agent.links.control_plane import (
    ControlPlaneClient,
    WorkDoorbellClient,
    parse_retry_after,
)
from edge_agent.testing import FakeControlPlane
from protocol import Heartbeat, SyncRequest, WorkResponse

REQUEST = SyncRequest(heartbeat=Heartbeat(agent_version="t", sent_at=1.0, outbox_depth=0))


def client_answering(response: httpx.Response, credential: str = "c" * 20) -> ControlPlaneClient:
    return ControlPlaneClient(
        "http://cp", credential=credential, transport=httpx.MockTransport(lambda _: response)
    )


def client_raising(exc: Exception) -> ControlPlaneClient:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return ControlPlaneClient("http://cp", transport=httpx.MockTransport(handler))


def test_enroll_returns_the_identity_and_uses_up_the_token() -> None:
    """A good token yields agent id, kitchen and credential; reusing it is refused clearly."""
    fake = FakeControlPlane(kitchen_id="k7")
    with ControlPlaneClient("http://cp", transport=fake.transport()) as client:
        identity = client.enroll(token="enroll-token-1", name="box", agent_version="0.1")
        assert (identity.agent_id, identity.kitchen_id) == ("agent-1", "k7")
        with pytest.raises(EnrollmentRefused, match="invalid, expired or used"):
            client.enroll(token="enroll-token-1", name="box", agent_version="0.1")


def test_sync_with_a_revoked_credential_raises_credential_rejected() -> None:
    """401 on sync becomes CredentialRejected carrying the server's detail."""
    with (
        client_answering(httpx.Response(401, json={"detail": "agent revoked"})) as client,
        pytest.raises(CredentialRejected, match="agent revoked") as caught,
    ):
        client.sync(REQUEST)
    assert caught.value.status == 401


@pytest.mark.parametrize("status", [429, 503])
def test_overload_answers_raise_retry_later_with_the_retry_after_delay(status: int) -> None:
    """429/503 with Retry-After: 7 becomes RetryLater(delay_s=7)."""
    response = httpx.Response(status, headers={"Retry-After": "7"})
    with client_answering(response) as client, pytest.raises(RetryLater) as caught:
        client.sync(REQUEST)
    assert caught.value.delay_s == 7.0


def test_a_connection_failure_raises_unreachable_from_the_httpx_error() -> None:
    """A refused connection is ControlPlaneUnreachable, chained to the httpx error."""
    error = httpx.ConnectError("connection refused")
    with client_raising(error) as client, pytest.raises(ControlPlaneUnreachable) as caught:
        client.sync(REQUEST)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_certificate_failure_raises_tls_failure() -> None:
    """An SSL verification error is reported as TLSFailure, a kind of unreachable."""
    error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    with client_raising(error) as client, pytest.raises(TLSFailure):
        client.sync(REQUEST)


def test_an_invalid_sync_answer_raises_control_plane_error() -> None:
    """A 200 whose body is not a SyncResponse is a ControlPlaneError, not a pydantic error."""
    response = httpx.Response(200, json={"acked_seq": -1})
    with client_answering(response) as client, pytest.raises(ControlPlaneError, match="invalid"):
        client.sync(REQUEST)


def test_retry_after_accepts_an_http_date_and_caps_huge_values() -> None:
    """Retry-After as an HTTP date is converted to seconds; absurd delays are capped."""
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("999999", now=0.0) == 600.0


def test_backoff_grows_exponentially_within_its_cap_and_resets() -> None:
    """Delays stay within [0, min(cap, base*2^n)]; reset starts over."""
    rng = random.Random(1)
    for attempt in range(12):
        assert (
            0.0
            <= backoff_delay(attempt, base_s=1.0, cap_s=30.0, rng=rng)
            <= min(30.0, 2.0**attempt)
        )
    backoff = Backoff(base_s=1.0, cap_s=30.0, rng=rng)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_backoff_never_waits_less_than_retry_after() -> None:
    """A server's Retry-After is a floor, with at most 10 % jitter on top."""
    backoff = Backoff(base_s=1.0, cap_s=30.0, rng=random.Random(3))
    assert all(20.0 <= backoff.next_delay(floor_s=20.0) <= 22.0 for _ in range(20))


def doorbell_answering(handler: Any) -> WorkDoorbellClient:
    return WorkDoorbellClient(
        "http://cp", credential="c" * 20, transport=httpx.MockTransport(handler)
    )


def ask_doorbell(client: WorkDoorbellClient, **kwargs: Any) -> WorkResponse:
    async def main() -> WorkResponse:
        async with client:
            return await client.work(**kwargs)

    return asyncio.run(main())


def test_the_doorbell_asks_with_the_version_held_and_the_wait() -> None:
    """GET /v1/agents/work?since=…&wait_s=…, bearer credential; the answer is parsed."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"version": "e.3", "changed": True, "next_lease_at": 12.0, "server_time": 10.0}
        return httpx.Response(200, json=body)

    answer = ask_doorbell(doorbell_answering(handler), since="e.2", wait_s=20)
    [request] = seen
    assert (request.method, request.url.path) == ("GET", "/v1/agents/work")
    assert dict(request.url.params) == {"since": "e.2", "wait_s": "20.000"}
    assert request.headers["Authorization"] == "Bearer " + "c" * 20
    assert (answer.version, answer.changed, answer.next_lease_at) == ("e.3", True, 12.0)


@pytest.mark.parametrize(
    ("status", "raised"),
    [(401, CredentialRejected), (403, CredentialRejected), (503, RetryLater)],
)
def test_doorbell_refusals_are_translated_like_sync_ones(
    status: int, raised: type[ControlPlaneError]
) -> None:
    """401/403: CredentialRejected; 503: RetryLater; each with its status."""
    client = doorbell_answering(lambda _: httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(raised) as caught:
        ask_doorbell(client, since=None, wait_s=0)
    assert caught.value.status == status


def test_a_control_plane_without_the_doorbell_answers_404() -> None:
    """An older control plane: ControlPlaneError with status 404 (the watch turns off)."""
    client = doorbell_answering(lambda _: httpx.Response(404, json={"detail": "not found"}))
    with pytest.raises(ControlPlaneError) as caught:
        ask_doorbell(client, since=None, wait_s=0)
    assert caught.value.status == 404


def test_an_unreachable_doorbell_is_control_plane_unreachable() -> None:
    """A refused connection is translated at the seam, the cause kept."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ControlPlaneUnreachable) as caught:
        ask_doorbell(doorbell_answering(handler), since=None, wait_s=0)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
