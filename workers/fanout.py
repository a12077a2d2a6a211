"""The desk consumer: reads the desk stream through a consumer group and applies it.

It runs as a long-lived task of the worker process, beside arq (see
workers/supervisor.py), not inside it: it blocks on XREADGROUP, so a new action
is applied the moment it lands, arq's queue polling is never on this path, and
arq stopping and starting again around a Redis outage does not touch it.

It counts what it settles in the worker's metrics (workers/metrics.py): each entry by its
action type (read from the entry itself, so the applier is left as it is), and the entries
its own commits applied.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.workers.apply import Applier, ScheduleHook, stream_id_key
from flashwire.workers.consumer_loop import run_consumer
from flashwire.workers.metrics import UNKNOWN_ACTION, WorkerMetrics
from flashwire.workers.outage import OutageLog

log = logging.getLogger(__name__)

READ_COUNT = 200
READ_BLOCK_MS = 1_000


# An action type as the metrics label it (desk entries are written by our own API and scheduler,
# so this only keeps a damaged entry from making a label of anything).
ACTION_NAME = re.compile(r"^[a-z_]{1,32}$")


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def action_of(fields: dict[bytes, bytes] | None) -> str:
    """The action type of a desk entry (`{"action": "post", ...}` in field `a`), or 'unknown'."""
    try:
        kind = orjson.loads((fields or {})[b"a"])["action"]
    except (KeyError, TypeError, orjson.JSONDecodeError):
        return UNKNOWN_ACTION
    return kind if isinstance(kind, str) and ACTION_NAME.match(kind) else UNKNOWN_ACTION


class DeskConsumer:
    """One consumer of the desk stream's group; several may run at once."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        *,
        name: str,
        on_schedule: ScheduleHook | None = None,
        outages: OutageLog | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self.name = name
        self._outages = outages or OutageLog()
        self._metrics = metrics if metrics is not None else self._outages.metrics
        self.applier = Applier(redis, keys, settings, on_schedule=on_schedule)

    async def ensure_group(self) -> None:
        """Create the consumer group from the start of the stream, if it is missing."""
        try:
            await self._redis.xgroup_create(self._keys.desk, self._keys.desk_group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def catch_up(self) -> int:
        """Apply everything already in the desk stream (at start-up, after a crash)."""
        newest = await self._redis.xrevrange(self._keys.desk, count=1)
        if not newest:
            await self.applier.applied_cursor()  # known, so the first entry takes the short path
            return 0
        applied = await self.applier.apply_through(_decode(newest[0][0]))
        self._metrics.desk_entries_applied.inc(applied)
        return applied

    async def _settle(self, actions: dict[str, str]) -> None:
        """Apply every desk entry up to the newest of `actions` (entry id -> action type) and
        acknowledge them; then count them."""
        if not actions:
            return
        applied = await self.applier.apply_through(max(actions, key=stream_id_key))
        await self._redis.xack(self._keys.desk, self._keys.desk_group, *actions)
        self._count(applied, actions.values())

    def _count(self, applied: int, actions: Iterable[str]) -> None:
        self._metrics.desk_entries_applied.inc(applied)
        for action in actions:
            self._metrics.desk_actions.labels(action).inc()

    async def _read_new(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """The entries delivered to this consumer next, (id, fields) in desk order: blocks up to
        READ_BLOCK_MS for the first one."""
        response = await self._redis.xreadgroup(
            self._keys.desk_group,
            self.name,
            {self._keys.desk: ">"},
            count=READ_COUNT,
            block=READ_BLOCK_MS,
        )
        return [(_decode(entry_id), fields) for _, entries in response or [] for entry_id, fields in entries]

    async def _claim_abandoned(self) -> dict[str, str]:
        """Take over entries another consumer read but never acknowledged (it died)."""
        result = await self._redis.xautoclaim(
            self._keys.desk,
            self._keys.desk_group,
            self.name,
            min_idle_time=self._settings.claim_idle_ms,
            start_id="0-0",
            count=READ_COUNT,
            justid=True,
        )
        # With justid, redis-py returns just the list of claimed ids (without it, Redis 6.2 would
        # return a trimmed entry as a nil that redis-py cannot parse).
        return await self._actions_of([_decode(entry_id) for entry_id in result])

    async def _actions_of(self, ids: list[str]) -> dict[str, str]:
        """The action types of desk entries, by id, in one round trip (claims are rare)."""
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(self._keys.desk, min=entry_id, max=entry_id, count=1)
            found = await pipe.execute()
        return {
            entry_id: action_of(entries[0][1] if entries else None)
            for entry_id, entries in zip(ids, found, strict=True)
        }

    async def _prepare(self) -> None:
        """Make the group if missing and apply what is already on the desk (start-up, or after an
        outage: a full catch-up)."""
        await self.ensure_group()
        applied = await self.catch_up()
        log.info("desk consumer %s ready (caught up %d entries)", self.name, applied)

    async def _claim(self) -> None:
        await self._settle(await self._claim_abandoned())

    async def _step(self) -> None:
        """Read what is new and apply it: each entry committed and acknowledged in one round trip
        on the short path (workers/apply.py), the entries acknowledged here otherwise."""
        entries = await self._read_new()
        if not entries:
            return
        applied, acknowledged = await self.applier.apply_read(entries)
        if not acknowledged:
            await self._redis.xack(self._keys.desk, self._keys.desk_group, *(entry for entry, _ in entries))
        self._count(applied, (action_of(fields) for _, fields in entries))

    async def run(self) -> None:
        """Consume until cancelled, waiting out Redis outages of any length and other errors
        (workers/consumer_loop.py)."""
        await run_consumer(
            "desk consumer",
            prepare=self._prepare,
            claim=self._claim,
            step=self._step,
            claim_every_s=self._settings.claim_idle_ms / 2000,
            outages=self._outages,
            metrics=self._metrics,
        )
