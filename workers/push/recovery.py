"""Push batches of a dead worker run again within seconds, not after arq's in-progress timeout.

arq marks a started job "in progress" for its timeout plus 10 s and no other worker takes it
until the mark expires (../shared/PITFALLS.md 2.10): a worker SIGKILLed in the middle of a
fan-out would leave its batches unsent for that long. Each running batch is therefore recorded
with its worker's name (`{fw}:push:running`, workers/push/batch.py), and every worker checks that
record every CHECK_EVERY_S: a batch whose worker's heartbeat (workers/heartbeat.py) is older
than DEAD_AFTER_MS, or gone, has its in-progress mark deleted, so the next poll of any worker
runs it again — and it skips the targets already settled.
"""

from __future__ import annotations

import asyncio
import logging

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.workers.outage import REDIS_DOWN

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
# Heartbeats come every second (workers/heartbeat.py), but a worker whose event loop is busy
# encrypting thousands of pushes can send them late: 3 s revived the batches of live, busy workers
# in a 100,000-target bench (73 targets sent twice). 15 missed beats mean the worker is dead.
DEAD_AFTER_MS = 15_000

# On the main Redis: the running hash and the heartbeats (both `{fw}`); the dead workers' jobs
# are taken out of the hash here, and their arq in-progress marks then deleted on arq's Redis
# (FLASHWIRE_ARQ_REDIS_URL: a separate server on a Cluster). A crash in between leaves a mark to
# expire on its own (arq's timeout): the batch runs late, never twice and never lost.
_REVIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local running = redis.call('HGETALL', KEYS[1])
local revived = {}
for i = 1, #running, 2 do
  local job, worker = running[i], running[i + 1]
  local beat = redis.call('ZSCORE', KEYS[2], worker)
  if not beat or now - tonumber(beat) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], job)
    table.insert(revived, job)
  end
end
return revived
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class BatchRevival:
    """Frees the push batches of dead workers (see the module docstring)."""

    def __init__(self, redis: Redis, pool: ArqRedis, keys: Keys) -> None:
        """`redis`: the main Redis; `pool`: arq's (FLASHWIRE_ARQ_REDIS_URL)."""
        self._pool = pool
        self._keys = keys
        self._revive = redis.register_script(_REVIVE)

    async def check(self) -> list[str]:
        """Free the batches of dead workers now; answer their job ids."""
        revived = await self._revive(keys=[self._keys.push_running, self._keys.workers], args=[DEAD_AFTER_MS])
        jobs = [_text(job) for job in revived]
        if jobs:
            await self._pool.delete(*(in_progress_key_prefix + job for job in jobs))
            log.warning("push batches of a dead worker run again: %s", ", ".join(jobs))
        return jobs

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN:
                pass  # the other parts report the outage
            except Exception:
                log.exception("push batch revival failed; retrying")
            await asyncio.sleep(CHECK_EVERY_S)
