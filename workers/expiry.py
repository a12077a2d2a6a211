"""Expiring lines: an arq cron job that puts an `expire` action on the desk when a line is due.

Going through the desk keeps one path for every change readers see, so an
expiry is ordered with corrections and retractions of the same line.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from service.clock import now_ms
from service.keys import Keys

_ENQUEUE_DUE = """
local expiry, index, desk = KEYS[1], KEYS[2], KEYS[3]
local now, maxlen = ARGV[1], ARGV[2]
local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 200)
local count = 0
for i = 1, #due, 2 do
  local line_id, score = due[i], due[i + 1]
  local edition = redis.call('HGET', index, line_id)
  if edition then
    local action = '{"action":"expire","id":"' .. line_id .. '","edition":"' .. edition ..
      '","at":' .. now .. ',"expected_expires_at_ms":' .. score .. '}'
    redis.call('XADD', desk, 'MAXLEN', '~', maxlen, '*', 'a', action)
    count = count + 1
  end
  redis.call('ZREM', expiry, line_id)
end
return count
"""


async def enqueue_due_expiries(redis: Redis, keys: Keys, *, desk_maxlen: int) -> int:
    """Put an expire action on the desk for every line whose expiry has passed."""
    script = redis.register_script(_ENQUEUE_DUE)
    count = await script(keys=[keys.expiry, keys.line_index, keys.desk], args=[now_ms(), desk_maxlen])
    return int(count)


async def expire_due_lines(ctx: dict[str, Any]) -> int:
    """arq cron job: see `enqueue_due_expiries`."""
    return await enqueue_due_expiries(
        ctx["flashwire_redis"], ctx["flashwire_keys"], desk_maxlen=ctx["flashwire_settings"].desk_retention
    )
