"""Identifiers of rows that are created all the time (orders, prep tasks): time-ordered.

A random identifier (a UUID4) puts each new row, and each index entry keyed by it, at a random
place in its B-tree: every order dirtied a different leaf page of each of those indexes, and
every one of those pages went into the write-ahead log and its fsync. With the creation time
first, the rows of one batch land side by side, on the same few pages. The rest stays random
(80 bits from the OS's CSPRNG), so identifiers are still unique and cannot be guessed; they
disclose only when the row was created, which the API shows anyway.

>>> a, b = time_ordered_hex(at_ms=1), time_ordered_hex(at_ms=2)
>>> len(a), a < b, a[:12]
(32, True, '000000000001')
"""

from __future__ import annotations

import secrets
import time

__all__ = ["time_ordered_hex"]


def time_ordered_hex(*, at_ms: int | None = None) -> str:
    """32 hex digits (as many as a UUID's): the wall clock in milliseconds (48 bits), then 80
    random bits."""
    ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    return f"{ms & 0xFFFF_FFFF_FFFF:012x}{secrets.token_hex(10)}"
