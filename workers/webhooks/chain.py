"""Each endpoint's delivery, one message at a time: the state in Redis and the arq job of each attempt.

An endpoint's state (`Keys.webhook_state`, flashwire/core/webhook_store.py) names the log entry
in flight and its attempt. Each attempt is an arq job of its own, `wh:<endpoint>:<entry>:<attempt>`,
enqueued with its delay (`_defer_until`), never arq's `Retry`: arq keeps a job's key for a day
at most and counts retries in a key that expires (../shared/PITFALLS.md 2.7, 2.8), while a
delivery may be retried for 27 hours. A job runs only if the state still names its entry and
attempt (`begin`), so a duplicate or stale job does nothing, and every move of the state is one
script that checks the same (`advance`, `retry`). One job per endpoint exists at a time, which
is what keeps the order: the next message is started only when the previous one is settled.

What could be lost with a crash is found again by `Watchdog`, every second, for every active
endpoint with a message in flight:

- no arq job for the attempt (the worker died between moving the state and enqueuing, or the
  service started the endpoint: a replay, a re-enabled endpoint): enqueue it (arq refuses a
  second job with the same id while the first exists, ../shared/PITFALLS.md 2.9);
- a job marked in progress by a worker that no longer beats (SIGKILLed mid-attempt): arq would
  leave it alone until its in-progress mark expires (2.10); the watchdog deletes the mark, and
  the job runs again, repeating at most the message in flight, with the same webhook-id.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.webhook_models import DeliveryRecord
from flashwire.core.webhook_store import EndpointStore

log = logging.getLogger(__name__)

JOB_FUNCTION = "deliver_webhook"
# A worker whose heartbeat is older than this is dead (workers/heartbeat.py beats every second).
WORKER_STALE_MS = 5_000

_BEGIN = """
local s = redis.call('HMGET', KEYS[1], 'current', 'attempt')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'runner', ARGV[3])
return 1
"""

_ADVANCE = """
local s = redis.call('HMGET', KEYS[1], 'current', 'attempt')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] then return false end
local nxt = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', 1)
if nxt[1] then
  redis.call('HSET', KEYS[1], 'current', nxt[1][1], 'attempt', '1', 'due_ms', ARGV[3], 'runner', '')
  return nxt[1][1]
end
redis.call('HSET', KEYS[1], 'current', '', 'attempt', '0', 'due_ms', '0', 'runner', '')
return ''
"""

# Free a job held by a dead worker, only if the state still names that worker as its runner: two
# watchdogs seeing the same dead worker free it once, never a job a live worker took meanwhile.
# The state is on the main Redis; the job's in-progress mark, deleted next, on arq's
# (FLASHWIRE_ARQ_REDIS_URL). A crash in between leaves the mark to expire (arq's timeout): the
# attempt runs late, once.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'runner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'runner', '')
return 1
"""

_RETRY = """
local s = redis.call('HMGET', KEYS[1], 'current', 'attempt')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'attempt', tostring(tonumber(ARGV[2]) + 1), 'due_ms', ARGV[3], 'runner', '')
return 1
"""


def job_id(endpoint_id: str, entry_id: str, attempt: int) -> str:
    """The arq job id of one attempt."""
    return f"wh:{endpoint_id}:{entry_id}:{attempt}"


class Chain:
    """Moves endpoints' states and enqueues their attempts."""

    def __init__(self, redis: Redis, pool: ArqRedis, keys: Keys, *, delivery_retention_s: int) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._retention_s = delivery_retention_s
        self._begin = redis.register_script(_BEGIN)
        self._advance = redis.register_script(_ADVANCE)
        self._retry = redis.register_script(_RETRY)

    @property
    def pool(self) -> ArqRedis:
        """arq's Redis (FLASHWIRE_ARQ_REDIS_URL): its queue and job keys."""
        return self._pool

    async def begin(self, endpoint_id: str, entry_id: str, attempt: int, runner: str) -> bool:
        """Claim an attempt for this worker (`runner`); False if the state has moved on (a stale job)."""
        claimed = await self._begin(
            keys=[self._keys.webhook_state(endpoint_id)], args=[entry_id, attempt, runner]
        )
        return bool(claimed)

    async def record(self, endpoint_id: str, entry_id: str, record: DeliveryRecord) -> None:
        """Store a delivery's record (it expires after the retention)."""
        await self._redis.set(
            self._keys.webhook_delivery(endpoint_id, entry_id), record.model_dump_json(), ex=self._retention_s
        )

    async def delivery(self, endpoint_id: str, entry_id: str) -> DeliveryRecord:
        """A delivery's record so far (empty before its first attempt)."""
        raw = await self._redis.get(self._keys.webhook_delivery(endpoint_id, entry_id))
        return DeliveryRecord.model_validate_json(raw) if raw else DeliveryRecord()

    async def entry(self, endpoint_id: str, entry_id: str) -> tuple[str, bytes] | None:
        """A log entry's webhook-id and body bytes, or None if it is no longer in the log (trimmed)."""
        found = await self._redis.xrange(self._keys.webhook_log(endpoint_id), entry_id, entry_id)
        if not found:
            return None
        fields: dict[bytes, bytes] = found[0][1]
        return fields[b"m"].decode(), fields[b"b"]

    async def advance(self, endpoint_id: str, entry_id: str, attempt: int) -> str | None:
        """The entry is settled: start the next one now. Returns the next entry's id, "" if the log
        has no more, None if the state had moved on already."""
        nxt = await self._advance(
            keys=[self._keys.webhook_state(endpoint_id), self._keys.webhook_log(endpoint_id)],
            args=[entry_id, attempt, now_ms()],
        )
        if nxt is None:
            return None
        return nxt.decode() if isinstance(nxt, bytes) else str(nxt)

    async def retry(self, endpoint_id: str, entry_id: str, attempt: int, due_ms: int) -> bool:
        """The attempt failed: the next one is due at `due_ms`. False if the state had moved on."""
        done = await self._retry(
            keys=[self._keys.webhook_state(endpoint_id)], args=[entry_id, attempt, due_ms]
        )
        return bool(done)

    async def enqueue(self, endpoint_id: str, entry_id: str, attempt: int, due_ms: int) -> bool:
        """Enqueue the attempt's job, deferred to `due_ms`; False if it exists already."""
        job = await self._pool.enqueue_job(
            JOB_FUNCTION,
            endpoint_id,
            entry_id,
            attempt,
            _job_id=job_id(endpoint_id, entry_id, attempt),
            _queue_name=self._keys.webhook_queue,
            _defer_until=datetime.fromtimestamp(due_ms / 1000, tz=UTC),
        )
        return job is not None

    async def kick(self, endpoint_id: str) -> None:
        """Enqueue the job of whatever attempt the endpoint's state names, if any."""
        raw = await self._redis.hgetall(self._keys.webhook_state(endpoint_id))
        state = {k.decode(): v.decode() for k, v in raw.items()}
        current, attempt = state.get("current", ""), int(state.get("attempt") or 0)
        if current and attempt:
            await self.enqueue(endpoint_id, current, attempt, int(state.get("due_ms") or 0))


class Watchdog:
    """Finds endpoints whose attempt has no job, or a job held by a dead worker (module docstring)."""

    def __init__(self, redis: Redis, keys: Keys, store: EndpointStore, chain: Chain) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._chain = chain
        self._release = redis.register_script(_RELEASE)

    async def sweep(self) -> int:
        """One pass over the active endpoints; returns how many it set going again."""
        endpoints = [e for e in await self._store.all() if e.status == "active"]
        if not endpoints:
            return 0
        seconds, micros = await self._redis.time()
        redis_now_ms = int(seconds) * 1000 + int(micros) // 1000
        fixed = 0
        for endpoint in endpoints:
            state = await self._store.state(endpoint.id)
            current, attempt = state.get("current", ""), int(state.get("attempt") or 0)
            if not current or not attempt:
                continue
            jid = job_id(endpoint.id, current, attempt)
            # The job's keys are on arq's Redis, the heartbeats on the main one.
            async with self._chain.pool.pipeline(transaction=False) as pipe:
                pipe.exists(job_key_prefix + jid)
                pipe.exists(in_progress_key_prefix + jid)
                queued, running = await pipe.execute()
            beat = await self._redis.zscore(self._keys.workers, state.get("runner") or "-")
            if not queued:
                if await self._chain.enqueue(endpoint.id, current, attempt, int(state.get("due_ms") or 0)):
                    log.info(
                        "webhook %s: attempt %d of %s had no job; enqueued", endpoint.id, attempt, current
                    )
                    fixed += 1
            elif running and state.get("runner") and (beat is None or beat < redis_now_ms - WORKER_STALE_MS):
                # The worker running it is gone: let arq run the job again now rather than when the
                # mark expires; its stale `runner` is cleared in the same step, so this happens once.
                released = await self._release(
                    keys=[self._keys.webhook_state(endpoint.id)], args=[state["runner"]]
                )
                if not released:
                    continue
                await self._chain.pool.delete(in_progress_key_prefix + jid)
                log.warning(
                    "webhook %s: worker %s died during attempt %d of %s; running it again",
                    endpoint.id,
                    state.get("runner"),
                    attempt,
                    current,
                )
                fixed += 1
        return fixed
