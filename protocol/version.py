"""Schema versioning: every message carries ``v`` = "MAJOR.MINOR".

A reader accepts any minor version of a major it knows (new optional fields are tolerated) and
rejects an unknown major with :class:`UnsupportedVersion`.
"""

from __future__ import annotations

from protocol.errors import UnsupportedVersion

SCHEMA_VERSION = "1.0"
SUPPORTED_MAJORS = frozenset({1})


def check_version(v: object) -> str:
    """Return ``v`` if its major version is supported, else raise :class:`UnsupportedVersion`.

    >>> check_version("1.7")
    '1.7'
    """
    if not isinstance(v, str):
        raise UnsupportedVersion(f"schema version must be a string like '1.0', got {v!r}")
    major, sep, minor = v.partition(".")
    if not sep or not (major + minor).isascii() or not major.isdigit() or not minor.isdigit():
        raise UnsupportedVersion(f"schema version must look like 'MAJOR.MINOR', got {v!r}")
    if int(major) not in SUPPORTED_MAJORS:
        raise UnsupportedVersion(
            f"schema major version {major} is not supported (this side speaks "
            f"{', '.join(str(m) for m in sorted(SUPPORTED_MAJORS))}.x)"
        )
    return v
