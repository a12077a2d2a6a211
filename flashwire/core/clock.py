"""Time helpers: milliseconds since the epoch, and RFC 3339 strings for the wire.

An instant Flashwire stores or sends lies between INSTANT_MIN_MS (1970-01-01T00:00:00.000Z, where
Redis stream ids, and so audit ids and cursors, begin) and INSTANT_MAX_MS
(9999-12-31T23:59:59.999Z, the last instant `iso_from_ms` can write: RFC 3339 section 5.6 has
four-digit years). A time given with an offset can fall outside once normalised to UTC
(`9999-12-31T23:59:59-14:00` is in year 10000): every time a client sends is checked against this
range where it is parsed (`flashwire.core.models.instant_ms`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
INSTANT_MIN_MS = 0
INSTANT_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - EPOCH) // _MS


def now_ms() -> int:
    """Wall-clock time in milliseconds."""
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. 2026-11-25T16:40:00.123Z.

    `ms` must be within INSTANT_MIN_MS..INSTANT_MAX_MS (ValueError otherwise).
    """
    if not INSTANT_MIN_MS <= ms <= INSTANT_MAX_MS:
        raise ValueError(f"{ms} ms is outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59.999Z")
    return (EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_from_iso(text: str) -> int:
    """Parse an RFC 3339 / ISO 8601 timestamp with an offset into epoch ms (sub-millisecond digits
    are dropped, towards the past); raise ValueError otherwise. The result may lie outside
    INSTANT_MIN_MS..INSTANT_MAX_MS: callers that take times from clients check the range."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2026-11-25T18:00:00Z")
    # Exact integer arithmetic: `timestamp() * 1000` is a float and can be off by a millisecond.
    return (parsed - EPOCH) // _MS
