"""Time helpers: milliseconds since the epoch, and RFC 3339 strings for the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Wall-clock time in milliseconds."""
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. 2026-11-25T16:40:00.123Z."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_from_iso(text: str) -> int:
    """Parse an RFC 3339 / ISO 8601 timestamp with an offset; raise ValueError otherwise."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2026-11-25T18:00:00Z")
    return int(parsed.timestamp() * 1000)
