"""Push counts per line version, as the worker writes them and the API reads them.

The worker's batches (workers/push/batch.py) count into `fw:push:reach:<line id>`: fields
`<version>:<kind>:<outcome>` (accepted, gone, failed, retry, capped, quiet, expired), and the
planner's `<version>:<kind>:targets` and `:first_ms` (the desk's acceptance), the batches'
`:last_ms` (the end of the latest one).
"""

from __future__ import annotations

from collections import defaultdict

from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.models import PushReach

SKIPPED = ("capped", "quiet", "expired", "superseded")


def parse_push_reach(raw: dict[bytes, bytes]) -> dict[tuple[int, str], PushReach]:
    """{(version, kind): PushReach} from the hash's fields."""
    fields: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for name, value in raw.items():
        version, _, rest = name.decode().partition(":")
        kind, _, what = rest.partition(":")
        if version.isdigit() and kind in ("line", "correction", "withdrawal") and what:
            fields[(int(version), kind)][what] = int(value)
    reach: dict[tuple[int, str], PushReach] = {}
    for (number, kind), counts in fields.items():
        first, last = counts.get("first_ms"), counts.get("last_ms")
        reach[(number, kind)] = PushReach(
            kind=kind,  # type: ignore[arg-type]
            targets=counts.get("targets", 0),
            accepted=counts.get("accepted", 0),
            removed=counts.get("gone", 0),
            failed=counts.get("failed", 0),
            skipped=sum(counts.get(name, 0) for name in SKIPPED),
            ms=max(0, last - first) if first and last else None,
        )
    return reach


async def read_push_reach(
    redis: Redis, keys: Keys, line_ids: list[str]
) -> list[dict[tuple[int, str], PushReach]]:
    """Push counts of several lines, in one round trip."""
    if not line_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for line_id in line_ids:
            pipe.hgetall(keys.push_reach(line_id))
        results = await pipe.execute()
    return [parse_push_reach(raw) for raw in results]


def current_push(reach: dict[tuple[int, str], PushReach], version: int) -> PushReach | None:
    """The pushes of a line's current version: its correction's or its first publication's."""
    return reach.get((version, "correction")) or reach.get((version, "line"))
