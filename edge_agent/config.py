"""The agent's config file: identity, credential, where the broker and control plane are.

The file is JSON, written atomically (temp file, fsync, rename, fsync of the directory) with
mode 0600 because it holds the agent's credential. Loading refuses a file that group or others
may read, and says how to fix it.

>>> config = AgentConfig(agent_id="a1", kitchen_id="k1", credential="s" * 32,
...                      control_plane_url="https://cp.example")
>>> config.sync_interval_s
2.0
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from edge_agent.errors import ConfigError, InsecureConfigError
from edge_agent.safety import RULE_PACKS, thresholds_for

#: Where ``enroll`` writes and ``run``/``status`` read unless ``--config`` says otherwise.
DEFAULT_CONFIG_PATH = Path("/etc/brigade/agent.json")


class SerialPortConfig(BaseModel):
    """One serial port with a probe (or older equipment) speaking the line protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, description="e.g. /dev/serial/by-id/usb-Brigade_Probe-if00")
    baudrate: int = Field(default=9600, gt=0)
    #: Probe configuration sent (CFG frames) after every (re)connect, e.g. {"interval_s": "5"}.
    configure: dict[str, str] = Field(default_factory=dict, max_length=16)


class AgentConfig(BaseModel):
    """Everything the agent needs to run; validated loudly, the credential never printed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kitchen_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    credential: SecretStr = Field(min_length=16)
    control_plane_url: str = Field(min_length=1)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    data_dir: Path = Path("/var/lib/brigade")
    sync_interval_s: float = Field(default=2.0, gt=0, le=3600)
    #: How many leased tasks the agent runs or holds at once.
    max_active_tasks: int = Field(default=4, ge=0, le=64)
    #: Extra time a machine step may take beyond its nominal duration before it is retried.
    step_margin_s: float = Field(default=120.0, ge=0)
    #: How long to wait for the first ack of a command before re-sending the same command id.
    ack_wait_s: float = Field(default=5.0, gt=0)
    #: Extra time staff have to confirm a manual step beyond its nominal duration.
    manual_margin_s: float = Field(default=600.0, ge=0)
    #: Longest wait between sync attempts while the control plane is down (days are fine).
    sync_backoff_cap_s: float = Field(default=300.0, gt=0, le=3600)
    #: Hold the control plane's work doorbell open (``GET /v1/agents/work``) and sync as soon
    #: as it rings, so new work starts within a fraction of a second rather than an interval.
    #: A hint only: leases still come only with syncs, which go on at the interval regardless.
    work_doorbell: bool = True
    #: Longest one doorbell request is held (the control plane caps it, at 25 s).
    doorbell_wait_s: float = Field(default=20.0, gt=0, le=300)

    # -- local store --------------------------------------------------------------------------
    #: Size the store may use before the oldest routine telemetry is dropped (never task
    #: events, alerts or HACCP evidence).
    disk_budget_mb: float = Field(default=500.0, gt=0)
    #: Send routine telemetry summaries (``readings.summary``, routine lane) to the control
    #: plane. Off keeps them local only (a control plane older than the event type would log
    #: each one as an unknown type).
    forward_readings: bool = True
    #: Window of one telemetry summary, and how often readings are committed (group commit).
    readings_window_s: float = Field(default=60.0, gt=0, le=3600)
    ingest_flush_s: float = Field(default=0.25, gt=0, le=10)

    # -- food safety ----------------------------------------------------------------------------
    #: The kitchen's rule pack (a key of ``edge_agent.safety.RULE_PACKS``).
    rule_pack: str = "us_fda_food_code_2022"
    #: Per-equipment threshold overrides by device id, e.g.
    #: ``{"fridge-2": {"alarm_c": 3.0, "breach_delay_s": 900}, "probe-1": {"mode": "hot"}}``.
    safety_overrides: dict[str, dict[str, float | str]] = Field(default_factory=dict)
    #: Reference probes placed in a unit, by probe device id: ``{"probe-1": "fridge-1"}`` (or
    #: ``"fridge-1/air_temp"`` for one of its probes). Probes of one unit more than its
    #: ``probe_accuracy_c`` (±1 °C) apart raise ``probe_disagreement``, a compliance event.
    probe_placements: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")],
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_.-]{1,64})?$")],
    ] = Field(default_factory=dict, max_length=64)
    #: How often timers (delays, probe silence, devices offline) are evaluated.
    safety_tick_s: float = Field(default=5.0, gt=0, le=600)
    #: A device offline this long raises a ``device_offline`` alert.
    device_offline_alert_s: float = Field(default=300.0, ge=0)

    # -- serial probes and local observability ----------------------------------------------------
    serial_ports: list[SerialPortConfig] = Field(default_factory=list, max_length=16)
    #: Local ``/metrics`` and ``/healthz`` (loopback by default; ``None`` turns them off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=9464, ge=0, le=65535)

    @field_validator("rule_pack")
    @classmethod
    def _known_pack(cls, value: str) -> str:
        if value not in RULE_PACKS:
            raise ValueError(f"unknown rule pack {value!r}; choose one of {sorted(RULE_PACKS)}")
        return value

    @field_validator("safety_overrides")
    @classmethod
    def _valid_overrides(
        cls, value: dict[str, dict[str, float | str]]
    ) -> dict[str, dict[str, float | str]]:
        pack = next(iter(RULE_PACKS.values()))
        for device_id, overrides in value.items():
            try:
                thresholds_for("fridge", pack, overrides)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{device_id}: {exc}") from exc
        return value

    @field_validator("control_plane_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "agent.db"

    def to_json(self) -> str:
        """The file's text, credential included (it is the one place the credential lives)."""
        body = self.model_dump(mode="json")
        body["credential"] = self.credential.get_secret_value()
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


def save_config(config: AgentConfig, path: Path) -> None:
    """Write ``config`` to ``path`` with mode 0600, atomically: readers see old or new, never half.

    Raises :class:`ConfigError` when the directory cannot be written.
    """
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            # mkstemp creates the file 0600 already; chmod again in case of an odd umask.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(config.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror or exc}") from exc


def load_config(path: Path) -> AgentConfig:
    """Read and validate the config file.

    Raises :class:`InsecureConfigError` if group or others may read it, and :class:`ConfigError`
    if it is missing, not JSON, or invalid (the message names the field).
    """
    path = path.expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist; run `brigade-agent enroll` first"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureConfigError(
            f"config file {path} holds the agent credential but is accessible by group or "
            f"others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"config file {path} is invalid: {problems}") from exc
