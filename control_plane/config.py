"""Control-plane settings, validated in one place and built by ``create_app``/``main``.

Every field can come from the environment with the ``BRIGADE_`` prefix
(``BRIGADE_DB_PATH=/var/lib/brigade/cp.db``). Nothing here is built at import time.
"""

from __future__ import annotations

from pathlib import Path

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
    #: defaults are far above what one kitchen fleet's normal traffic needs.
    admission_intake_limit: int = Field(default=256, ge=1)
    admission_sync_limit: int = Field(default=512, ge=1)
    admission_read_limit: int = Field(default=128, ge=1)
    admission_write_limit: int = Field(default=64, ge=1)
    admission_min_limit: int = Field(default=64, ge=1)
    admission_max_limit: int = Field(default=1024, ge=1)
    admission_target_latency_s: float = Field(default=0.5, gt=0)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _admission_limits_ordered(self) -> Settings:
        limits = {
            "admission_intake_limit": self.admission_intake_limit,
            "admission_sync_limit": self.admission_sync_limit,
            "admission_read_limit": self.admission_read_limit,
            "admission_write_limit": self.admission_write_limit,
        }
        for name, limit in limits.items():
            if not self.admission_min_limit <= limit <= self.admission_max_limit:
                raise ValueError(
                    f"{name}={limit} must lie between admission_min_limit="
                    f"{self.admission_min_limit} and admission_max_limit={self.admission_max_limit}"
                )
        return self
