"""The desk consumer: reads the desk stream through a consumer group and applies it.

It runs as a long-lived task of the worker process, beside arq (see
workers/supervisor.py), not inside it: it blocks on XREADGROUP, so a new action
is applied the moment it lands, arq's queue polling is never on this path, and
arq stopping and starting again around a Redis outage does not touch it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.workers.apply import Applier, ScheduleHook, stream_id_key
from flashwire.workers.outage import REDIS_DOWN, Backoff, OutageLog

log = logging.getLogger(__name__)

READ_COUNT = 200
READ_BLOCK_MS = 1_000


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self.name = name
        self._outages = outages or OutageLog()
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
            return 0
        return await self.applier.apply_through(_decode(newest[0][0]))

    async def _settle(self, ids: list[str]) -> None:
        if not ids:
            return
        await self.applier.apply_through(max(ids, key=stream_id_key))
        await self._redis.xack(self._keys.desk, self._keys.desk_group, *ids)

    async def _read_new(self) -> list[str]:
        response = await self._redis.xreadgroup(
            self._keys.desk_group,
            self.name,
            {self._keys.desk: ">"},
            count=READ_COUNT,
            block=READ_BLOCK_MS,
        )
        return [_decode(entry_id) for _, entries in response or [] for entry_id, _ in entries]

    async def _claim_abandoned(self) -> list[str]:
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
        # With justid, redis-py returns just the list of claimed ids.
        return [_decode(entry_id) for entry_id in result]

    async def run(self) -> None:
        """Consume until cancelled, waiting out Redis outages of any length and other errors."""
        backoff = Backoff()
        next_claim = 0.0
        ready = False
        while True:
            try:
                if not ready:
                    await self.ensure_group()
                    applied = await self.catch_up()
                    log.info("desk consumer %s ready (caught up %d entries)", self.name, applied)
                    ready = True
                if time.monotonic() >= next_claim:
                    await self._settle(await self._claim_abandoned())
                    next_claim = time.monotonic() + self._settings.claim_idle_ms / 2000
                await self._settle(await self._read_new())
                self._outages.regained("desk consumer")
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                # Logged once per outage (OutageLog); after it, start again with a full catch-up.
                self._outages.lost("desk consumer", exc)
                ready = False
                await asyncio.sleep(backoff.next_delay())
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    ready = False
                    continue
                log.exception("desk consumer: Redis refused a command; retrying")
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("desk consumer: unexpected error; retrying")
                await asyncio.sleep(1.0)
