"""The worker's heartbeat: who is alive, for /healthz and the desk's "publishing is stalled" banner.

Each worker process writes its name into the sorted set `Keys.workers` every
second, scored with Redis's own clock (TIME inside the script), so a node can
compare the scores with that same clock and with desk stream ids without
trusting the hosts' clocks to agree. A clean stop removes the name at once; a
killed worker simply stops beating and is stale after 5 s. Members older than
a day are trimmed on every beat, so restarts do not grow the set.

The same script measures the desk lag for the worker's metrics (workers/metrics.py): the age,
on that same clock, of the oldest desk entry no worker has applied yet (the measure the
nodes' /healthz uses). One round trip a second, which the beat makes anyway.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import REDIS_DOWN, Backoff, OutageLog

log = logging.getLogger(__name__)

BEAT_INTERVAL_S = 1.0
KEEP_MS = 24 * 3600 * 1000

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local applied = redis.call('GET', KEYS[3])
local first = redis.call('XRANGE', KEYS[2], applied and ('(' .. applied) or '-', '+', 'COUNT', 1)
local oldest = -1
if first[1] then oldest = tonumber(string.match(first[1][1], '^%d+')) end
return {now, oldest}
"""


class Heartbeat:
    """Records one worker as alive every second, through any Redis outage."""

    def __init__(
        self, redis: Redis, keys: Keys, name: str, outages: OutageLog, *, metrics: WorkerMetrics | None = None
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.name = name
        self._outages = outages
        self._metrics = metrics if metrics is not None else outages.metrics
        self._beat = redis.register_script(_BEAT)

    async def beat(self) -> int:
        """Record this worker as alive now, and the desk lag in the metrics; returns Redis's time in ms."""
        now_ms, oldest_ms = await self._beat(
            keys=[self._keys.workers, self._keys.desk, self._keys.desk_applied], args=[self.name, KEEP_MS]
        )
        lag_s = 0.0 if int(oldest_ms) < 0 else max(0, int(now_ms) - int(oldest_ms)) / 1000
        self._metrics.desk_lag.set(lag_s)
        return int(now_ms)

    async def run(self) -> None:
        """Beat until cancelled; a lost Redis is waited out, never fatal."""
        backoff = Backoff()
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                self._outages.lost("heartbeat", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception:
                self._metrics.error("unexpected")
                log.exception("heartbeat: unexpected error; retrying")
                await asyncio.sleep(BEAT_INTERVAL_S)
                continue
            self._outages.regained("heartbeat")
            backoff.reset()
            await asyncio.sleep(BEAT_INTERVAL_S)

    async def forget(self) -> None:
        """On a clean stop: leave the set at once, so health does not count a worker that is gone."""
        await self._redis.zrem(self._keys.workers, self.name)
