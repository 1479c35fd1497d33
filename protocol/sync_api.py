"""The agent <-> control-plane exchange (HTTP/JSON).

Endpoints (all JSON bodies are the models below):

``POST /v1/agents/enroll``  :class:`EnrollRequest` -> :class:`EnrollResponse`
    Trades a one-time, expiring enrollment token for an agent id and a credential. The
    credential is shown once; the server keeps only its hash.

``POST /v1/agents/sync``  (``Authorization: Bearer <credential>``)  :class:`SyncRequest` ->
:class:`SyncResponse`
    One round trip does everything: heartbeat, push a batch of outbox events (in ``seq`` order,
    starting at the first unacknowledged one), renew held leases, ask for new ones. The answer
    acknowledges events up to ``acked_seq`` (highest contiguous seq stored), asks for a resend
    from ``resend_from`` when it saw a gap, and carries new leases and cancellations. It also
    says how large a batch the control plane takes (``max_events``, ``max_request_bytes``) and
    when to sync next (``next_sync_s``); an agent that never saw them sends at most
    :data:`MAX_SYNC_BATCH` events and keeps its own interval.

``GET /v1/agents/work?since=VERSION&wait_s=20``  (same credential) -> :class:`WorkResponse`
    The work doorbell: held open until the work version of the agent's kitchen differs from
    ``since`` (at once when it already does, or ``since`` is absent), at most ``wait_s``
    seconds (the server caps it at :data:`MAX_WORK_WAIT_S`). The agent syncs when the version
    changed, and at ``next_lease_at``, when the next planned task enters the lease horizon.
    Versions are opaque (they restart with the server): any difference is a change. It is a
    hint only: work travels in syncs alone, so an agent that never hears the doorbell (a
    control plane without it answers ``404``) still gets every lease at its next sync.

Every write is idempotent: events are deduplicated by ``(agent_id, seq)``, a lease is identified
by ``(task_id, fencing_token)``, so any request may be retried after a timeout. Overload answers
are ``429``/``503`` with ``Retry-After``; agents back off with jitter.

A lease's start-by deadline travels twice: ``start_by`` on the server's clock (for people) and
``start_within_s``, relative to the moment the agent *sent* the request, which the agent
measures on its monotonic clock so that a skewed wall clock can never extend it.
"""

from __future__ import annotations

from pydantic import Field

from protocol.base import Ident, Scalar, Timestamp, Token, WireModel
from protocol.events import EventEnvelope
from protocol.messages import DeviceKind

#: Events per sync request that every control plane accepts: an agent sends at most this many
#: until the control plane advertises more (``SyncResponse.max_events``).
MAX_SYNC_BATCH = 500
#: Most events one sync request may carry (added in 1.0): a control plane that accepts more
#: than :data:`MAX_SYNC_BATCH` says so in ``SyncResponse.max_events``, so an agent catching up
#: after a partition needs fewer round trips.
MAX_SYNC_EVENTS = 2000
#: Longest sync interval a control plane may advertise (``SyncResponse.next_sync_s``); an agent
#: also caps what it honours, so a faulty server cannot silence a kitchen.
MAX_NEXT_SYNC_S = 60.0
#: Longest a control plane holds a work-doorbell request (``GET /v1/agents/work``).
MAX_WORK_WAIT_S = 25.0


class EnrollRequest(WireModel):
    """Agent -> control plane: redeem an enrollment token."""

    token: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=64)
    agent_version: str = Field(max_length=32)


class EnrollResponse(WireModel):
    """The agent's identity; ``credential`` is returned exactly once."""

    agent_id: Ident
    kitchen_id: Ident
    credential: str = Field(min_length=16, max_length=256)
    server_time: Timestamp


class RecipeStep(WireModel):
    """One step of a recipe as the agent executes it."""

    index: int = Field(ge=0)
    name: str = Field(max_length=64)
    equipment_kind: DeviceKind | None = None
    action: Token = "cook"
    setpoint_c: float | None = None
    duration_s: float = Field(ge=0)
    manual: bool = False
    min_core_temp_c: float | None = None


class Lease(WireModel):
    """Permission for one agent to run one prep task, fenced by ``fencing_token``."""

    task_id: Token
    kitchen_id: Ident
    station_id: Ident
    sku_id: Ident
    sku_name: str = Field(max_length=128)
    quantity: int = Field(ge=1)
    order_ids: list[Token] = Field(min_length=1)
    steps: list[RecipeStep] = Field(min_length=1, max_length=32)
    fencing_token: int = Field(ge=1)
    start_after: Timestamp
    finish_by: Timestamp
    start_by: Timestamp
    start_within_s: float = Field(ge=0)


class LeaseRenewal(WireModel):
    """The agent still holds this lease (and says whether it has started the task)."""

    task_id: Token
    fencing_token: int = Field(ge=1)


class Cancellation(WireModel):
    """The control plane withdrew a lease (order cancelled, task re-planned)."""

    task_id: Token
    fencing_token: int = Field(ge=1)
    reason: Token


class Heartbeat(WireModel):
    """Agent health, sent with every sync."""

    agent_version: str = Field(max_length=32)
    sent_at: Timestamp
    outbox_depth: int = Field(ge=0)
    oldest_event_age_s: float = Field(default=0, ge=0)
    active_tasks: int = Field(default=0, ge=0)
    links: dict[str, str] = Field(default_factory=dict, max_length=16)
    #: Routine telemetry summaries waiting, unnumbered, for room in a batch (added in 1.0).
    routine_backlog: int = Field(default=0, ge=0)
    #: Routine summaries the agent's disk budget dropped since it was installed (added in 1.0).
    routine_dropped: int = Field(default=0, ge=0)
    #: Food-safety and equipment alerts open on the agent (added in 1.0).
    open_alerts: int = Field(default=0, ge=0)


class SyncRequest(WireModel):
    """One sync round trip from an agent."""

    heartbeat: Heartbeat
    events: list[EventEnvelope] = Field(default_factory=list, max_length=MAX_SYNC_EVENTS)
    renewals: list[LeaseRenewal] = Field(default_factory=list, max_length=256)
    want_leases: int = Field(default=0, ge=0, le=64)


class SyncResponse(WireModel):
    """The control plane's answer."""

    acked_seq: int = Field(ge=0)
    resend_from: int | None = Field(default=None, ge=1)
    server_time: Timestamp
    leases: list[Lease] = Field(default_factory=list)
    cancellations: list[Cancellation] = Field(default_factory=list)
    lost_leases: list[Token] = Field(default_factory=list)
    config: dict[str, Scalar] = Field(default_factory=dict)
    #: Events this control plane accepts in one request (added in 1.0); absent: at most
    #: :data:`MAX_SYNC_BATCH`.
    max_events: int | None = Field(default=None, ge=1, le=MAX_SYNC_EVENTS)
    #: Largest request body this control plane accepts, in bytes (added in 1.0); the agent
    #: keeps a batch well under it.
    max_request_bytes: int | None = Field(default=None, ge=1024)
    #: Seconds until the agent's next routine sync (added in 1.0): the control plane spreads a
    #: large fleet's syncs. Absent: the agent's own interval. A batch cut short by a limit is
    #: still followed at once.
    next_sync_s: float | None = Field(default=None, ge=0, le=MAX_NEXT_SYNC_S)


class WorkResponse(WireModel):
    """The work doorbell's answer (added in 1.0): the work version of the agent's kitchen."""

    #: Opaque; compare for equality only (it restarts, with another epoch, with the server).
    version: Token
    #: Whether ``version`` differs from the ``since`` the agent sent: it should sync now.
    changed: bool
    #: When the next planned task of the kitchen enters the lease horizon (server clock);
    #: absent when none is known. Syncing then gets its lease without waiting an interval.
    next_lease_at: Timestamp | None = None
    server_time: Timestamp
