"""Control-plane settings, validated in one place and built by ``create_app``/``main``.

Every field can come from the environment with the ``BRIGADE_`` prefix
(``BRIGADE_DB_PATH=/var/lib/brigade/cp.db``). Nothing here is built at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """What a control-plane process needs to run."""

    model_config = SettingsConfigDict(env_prefix="BRIGADE_", extra="ignore", frozen=True)

    db_path: Path = Field(description="SQLite file of the control plane")
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    #: Tasks whose start_after is within this many seconds are handed out as leases.
    lease_horizon_s: float = Field(default=600.0, gt=0)
    #: A leased task must be started within this many seconds of max(start_after, lease time).
    start_by_grace_s: float = Field(default=120.0, gt=0)
    #: Requests with larger bodies get 413.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Idempotency keys (and their stored answers) are kept at least this long.
    idempotency_retention_s: float = Field(default=24 * 3600.0, ge=24 * 3600.0)
    #: How often expired idempotency keys are purged.
    idempotency_purge_interval_s: float = Field(default=3600.0, gt=0)
    #: Enrollment tokens expire after this many seconds unless the request says otherwise.
    enrollment_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600.0)
    #: Start and finish delays shorter than this are not reported in audit answers.
    delay_tolerance_s: float = Field(default=1.0, ge=0)
    #: A kitchen whose agents have not synced for this long is unreachable: its leased and
    #: started tasks are *stranded* (flagged, never moved without an operator's decision).
    agent_unreachable_after_s: float = Field(default=120.0, gt=0)
    #: Clock-offset estimation: how fast two clocks may drift apart (parts per million), and the
    #: jump in the offset beyond which the agent's clock is taken to have been set.
    clock_drift_ppm: float = Field(default=200.0, ge=0)
    clock_step_s: float = Field(default=5.0, gt=0)
    #: Overload protection: the initial concurrency limit of each traffic class (requests in
    #: progress), adapted between the floor and the ceiling against the latency target. The
    #: defaults are far above what one kitchen fleet's normal traffic needs. Intake has its own
    #: floor: an order costs a durable commit, so a handful in progress already fill the disk
    #: and the cores, and more only queue.
    admission_intake_limit: int = Field(default=32, ge=1)
    admission_intake_min_limit: int = Field(default=4, ge=1)
    admission_sync_limit: int = Field(default=512, ge=1)
    admission_read_limit: int = Field(default=128, ge=1)
    admission_write_limit: int = Field(default=64, ge=1)
    admission_min_limit: int = Field(default=64, ge=1)
    admission_max_limit: int = Field(default=1024, ge=1)
    admission_target_latency_s: float = Field(default=0.5, gt=0)
    #: A class's answers are slow (and, with the class busy, its limit shrinks) past this
    #: multiple of its own uncongested latency: queueing shows there long before the
    #: absolute target.
    admission_latency_tolerance: float = Field(default=2.0, gt=1)
    #: A refusal is answered after this long, so a client retrying at once in a loop retries
    #: at most this often (unless many refusals are already held: then at once).
    admission_refusal_hold_s: float = Field(default=0.25, ge=0, le=5)
    #: The control loop (prep-time learning, SLA alerts, backpressure, re-planning) runs this
    #: often; its backpressure signals count the work a kitchen's healthy slots can do within
    #: the horizon, and a level is held at least the dwell before it steps down.
    control_interval_s: float = Field(default=2.0, gt=0, le=300)
    #: Where ``brigade serve`` runs the control loop: ``process`` (a child process, so its
    #: ticks never hold up requests; :mod:`control_plane.loop_process`) or ``thread`` (a thread
    #: of the server process).
    control_loop: Literal["process", "thread"] = "process"
    #: Where ``brigade serve`` decides orders: ``process`` (a child process on another core,
    #: :mod:`control_plane.intake_writer`) or ``loop`` (on the server's event loop).
    intake_writer: Literal["process", "loop"] = "process"
    #: An intake writer process that has not answered an order this long is killed and
    #: started again (what waited on it gets 503); longer than SQLite's 30 s busy timeout.
    intake_writer_timeout_s: float = Field(default=60.0, gt=0)
    backpressure_horizon_s: float = Field(default=3600.0, gt=0)
    backpressure_min_dwell_s: float = Field(default=60.0, ge=0)
    #: Re-planning runs as soon as a kitchen becomes affected (paused, offline, unreachable,
    #: equipment failed) or its tasks change, and retries what found no place this often.
    replan_interval_s: float = Field(default=30.0, gt=0)
    #: An SLA alert clears once the order's margin has recovered past this many seconds.
    sla_clear_margin_s: float = Field(default=120.0, ge=0)
    #: How intake places prep work: ``just_in_time`` (as late as the promise, transport and the
    #: p90 allow, so food waits little) or ``asap`` (as early as a slot is free; short demos).
    planning_mode: Literal["just_in_time", "asap"] = "just_in_time"
    log_level: str = "INFO"
    # -- sync path
    #: Syncs a second the fleet is paced to: past it, agents are told to sync less often
    #: (``SyncResponse.next_sync_s``), up to ``sync_interval_cap_s`` apart.
    sync_budget_per_s: float = Field(default=200.0, gt=0)
    sync_interval_cap_s: float = Field(default=30.0, ge=2.0, le=60.0)

    @model_validator(mode="after")
    def _admission_limits_ordered(self) -> Settings:
        limits = {
            "admission_intake_limit": (self.admission_intake_limit, "admission_intake_min_limit"),
            "admission_sync_limit": (self.admission_sync_limit, "admission_min_limit"),
            "admission_read_limit": (self.admission_read_limit, "admission_min_limit"),
            "admission_write_limit": (self.admission_write_limit, "admission_min_limit"),
        }
        for name, (limit, floor_name) in limits.items():
            floor = getattr(self, floor_name)
            if not floor <= limit <= self.admission_max_limit:
                raise ValueError(
                    f"{name}={limit} must lie between {floor_name}={floor} and"
                    f" admission_max_limit={self.admission_max_limit}"
                )
        return self
