"""Errors raised by the edge agent.

    AgentError                        anything the agent refuses or cannot do
    ├── ConfigError                   the config file is missing, unreadable or invalid
    │   └── InsecureConfigError       the config file is readable by group or others
    ├── StoreError                    the SQLite store cannot be opened, migrated or written
    ├── AlreadyRunning                another agent holds the data directory's instance lock
    ├── LinkError                     a link to the outside world failed
    │   ├── BrokerError               the MQTT broker refused or dropped us
    │   └── ControlPlaneError         the control plane answered something unusable
    │       ├── ControlPlaneUnreachable   no HTTP answer at all (DNS, refused, timeout)
    │       │   └── TLSFailure            the TLS handshake or certificate check failed
    │       ├── CredentialRejected        401/403 on sync: credential revoked or wrong
    │       ├── EnrollmentRefused         4xx on enroll: token wrong, expired or used
    │       └── RetryLater                429/503: back off for ``delay_s`` seconds

Foreign errors (``httpx``, ``sqlite3``, ``OSError``, ``pydantic``) are translated at the seam
that meets them, always with ``raise ... from exc``, so callers handle only this tree.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every edge-agent error."""


class ConfigError(AgentError):
    """The agent's config file is missing, unreadable or invalid."""


class InsecureConfigError(ConfigError):
    """The config file holds a credential but other users may read it."""


class StoreError(AgentError):
    """The local SQLite store failed (open, migrate, write)."""


class AlreadyRunning(AgentError):
    """Another agent process holds the data directory's instance lock."""


class LinkError(AgentError):
    """A link (MQTT broker, control plane) failed."""


class BrokerError(LinkError):
    """The MQTT broker refused the connection or a publish failed."""


class ControlPlaneError(LinkError):
    """The control plane answered with an error or an invalid body."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ControlPlaneUnreachable(ControlPlaneError):
    """No HTTP answer: DNS failure, connection refused, timeout."""


class TLSFailure(ControlPlaneUnreachable):
    """TLS handshake or certificate verification failed."""


class CredentialRejected(ControlPlaneError):
    """The control plane refused the agent's credential (revoked, wrong kitchen, wrong)."""


class EnrollmentRefused(ControlPlaneError):
    """The control plane refused the enrollment token (wrong, expired or already used)."""


class RetryLater(ControlPlaneError):
    """The control plane is overloaded; retry after ``delay_s`` seconds (from Retry-After)."""

    def __init__(self, message: str, *, status: int, delay_s: float) -> None:
        super().__init__(message, status=status)
        self.delay_s = delay_s


__all__ = [
    "AgentError",
    "AlreadyRunning",
    "BrokerError",
    "ConfigError",
    "ControlPlaneError",
    "ControlPlaneUnreachable",
    "CredentialRejected",
    "EnrollmentRefused",
    "InsecureConfigError",
    "LinkError",
    "RetryLater",
    "StoreError",
    "TLSFailure",
]
