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

# Every key is declared (a Redis Cluster routes and checks a script by its KEYS; PITFALLS 3.9):
# KEYS = the running hash, the heartbeats, then the arq in-progress mark of each job in ARGV[2..]
# (the jobs listed by a read just before; one no longer running is left alone).
_REVIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local revived = {}
for i = 2, #ARGV do
  local job = ARGV[i]
  local worker = redis.call('HGET', KEYS[1], job)
  if worker then
    local beat = redis.call('ZSCORE', KEYS[2], worker)
    if not beat or now - tonumber(beat) > tonumber(ARGV[1]) then
      redis.call('DEL', KEYS[i + 1])
      redis.call('HDEL', KEYS[1], job)
      table.insert(revived, job)
    end
  end
end
return revived
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class BatchRevival:
    """Frees the push batches of dead workers (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._revive = redis.register_script(_REVIVE)

    async def check(self) -> list[str]:
        """Free the batches of dead workers now; answer their job ids."""
        running = [_text(job) for job in await self._redis.hkeys(self._keys.push_running)]
        if not running:
            return []
        revived = await self._revive(
            keys=[
                self._keys.push_running,
                self._keys.workers,
                *(in_progress_key_prefix + job for job in running),
            ],
            args=[DEAD_AFTER_MS, *running],
        )
        jobs = [job.decode() if isinstance(job, bytes) else str(job) for job in revived]
        if jobs:
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
