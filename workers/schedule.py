"""Scheduled work that reaches readers through the desk: embargo release and expiry.

An embargoed line is released by an arq job deferred to its release time, so
it survives worker restarts (the job lives in Redis) and runs within arq's
poll interval (0.2 s) of its time. A cron sweep every second is the backstop
for a job that was never enqueued (a worker that died right after committing
the schedule). Both only put an action on the desk; the applier decides, in
desk order, whether it still applies, so a cancelled embargo is never released
and a duplicate release is a no-op.

A job that finds Redis gone does not fail (arq would log a traceback for it):
the sweep simply skips this second, and a release asks arq to retry it. The
worker's supervisor restarts arq itself once Redis is back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from arq.worker import Retry
from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.models import SYSTEM_ACTOR
from flashwire.workers.outage import REDIS_DOWN

# The actor of every action the schedule writes, as the JSON the scripts splice into it.
ACTOR_JSON = SYSTEM_ACTOR.model_dump_json()
BACKSTOP_GRACE_MS = 1_000
RELEASE_RETRY_S = 1

_ENQUEUE_DUE_EXPIRIES = """
local expiry, index, desk = KEYS[1], KEYS[2], KEYS[3]
local now, maxlen, actor = ARGV[1], ARGV[2], ARGV[3]
local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 200)
local count = 0
for i = 1, #due, 2 do
  local line_id, score = due[i], due[i + 1]
  local edition = redis.call('HGET', index, line_id)
  if edition then
    local action = '{"action":"expire","id":"' .. line_id .. '","edition":"' .. edition ..
      '","at":' .. now .. ',"by":' .. actor .. ',"expected_expires_at_ms":' .. score .. '}'
    redis.call('XADD', desk, 'MAXLEN', '~', maxlen, '*', 'a', action)
    count = count + 1
  end
  redis.call('ZREM', expiry, line_id)
end
return count
"""

_ENQUEUE_RELEASE = """
local desk, scheduled = KEYS[1], KEYS[2]
local line_id, edition, expected, now, maxlen, actor = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local score = redis.call('ZSCORE', scheduled, line_id)
if not score or tonumber(score) ~= tonumber(expected) then return 0 end
local action = '{"action":"release","id":"' .. line_id .. '","edition":"' .. edition ..
  '","at":' .. now .. ',"by":' .. actor .. ',"expected_embargo_ms":' .. expected .. '}'
redis.call('XADD', desk, 'MAXLEN', '~', maxlen, '*', 'a', action)
return 1
"""


async def enqueue_due_expiries(redis: Redis, keys: Keys, *, desk_maxlen: int) -> int:
    """Put an expire action on the desk for every line whose expiry has passed."""
    script = redis.register_script(_ENQUEUE_DUE_EXPIRIES)
    count = await script(
        keys=[keys.expiry, keys.line_index, keys.desk], args=[now_ms(), desk_maxlen, ACTOR_JSON]
    )
    return int(count)


async def enqueue_release(
    redis: Redis, keys: Keys, line_id: str, edition: str, embargo_ms: int, *, desk_maxlen: int
) -> bool:
    """Put a release action on the desk if the line is still scheduled for `embargo_ms`."""
    script = redis.register_script(_ENQUEUE_RELEASE)
    done = await script(
        keys=[keys.desk, keys.scheduled(edition)],
        args=[line_id, edition, embargo_ms, now_ms(), desk_maxlen, ACTOR_JSON],
    )
    return bool(done)


async def release_overdue(redis: Redis, keys: Keys, editions: tuple[str, ...], *, desk_maxlen: int) -> int:
    """Backstop: release scheduled lines more than a second overdue (their job was lost)."""
    released = 0
    cutoff = now_ms() - BACKSTOP_GRACE_MS
    for edition in editions:
        due = await redis.zrangebyscore(
            keys.scheduled(edition), "-inf", cutoff, withscores=True, start=0, num=100
        )
        for member, score in due:
            line_id = member.decode()
            released += await enqueue_release(
                redis, keys, line_id, edition, int(score), desk_maxlen=desk_maxlen
            )
    return released


def release_time(embargo_ms: int) -> datetime:
    """The arq defer time of a release job."""
    return datetime.fromtimestamp(embargo_ms / 1000, tz=UTC)


# -- arq functions ---------------------------------------------------------------


async def release_embargo(ctx: dict[str, Any], line_id: str, edition: str, embargo_ms: int) -> bool:
    """arq job, deferred to the embargo time: release one line."""
    settings = ctx["flashwire_settings"]
    try:
        return await enqueue_release(
            ctx["flashwire_redis"],
            ctx["flashwire_keys"],
            line_id,
            edition,
            embargo_ms,
            desk_maxlen=settings.desk_retention,
        )
    except REDIS_DOWN:
        # Not a failure of the job: try again shortly (the every-second backstop also covers it).
        raise Retry(defer=RELEASE_RETRY_S) from None


async def every_second(ctx: dict[str, Any]) -> int:
    """arq cron job: expire due lines, and release overdue embargoes whose job was lost."""
    settings = ctx["flashwire_settings"]
    redis, keys = ctx["flashwire_redis"], ctx["flashwire_keys"]
    try:
        expired = await enqueue_due_expiries(redis, keys, desk_maxlen=settings.desk_retention)
        released = await release_overdue(redis, keys, settings.editions, desk_maxlen=settings.desk_retention)
    except REDIS_DOWN:
        return 0  # Redis is away: the next second's sweep picks up whatever came due meanwhile.
    return expired + released
