"""flashwire.workers.schedule: what the schedule puts on the desk is signed by the one system actor
(against the session's redis-server, under a key prefix of its own)."""

from __future__ import annotations

from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.models import DESK_ACTION_ADAPTER, SYSTEM_ACTOR, ExpireAction, ReleaseAction
from flashwire.dev.redis_server import RedisProcess
from flashwire.workers.schedule import enqueue_due_expiries, enqueue_release


async def test_release_and_expiry_actions_carry_the_system_actor(shared_redis_server: RedisProcess) -> None:
    """An embargo release and an expiry written by the schedule parse as desk actions whose `by` is
    models.SYSTEM_ACTOR, the `scheduler` of role `system` that docs/api.md names in the audit trail."""
    keys = Keys(f"schedule-test-{now_ms()}")
    redis = Redis.from_url(shared_redis_server.url)
    try:
        due_ms = now_ms() - 1_000
        await redis.hset(keys.line_index, "en-00000000000000a1", "en")
        await redis.zadd(keys.expiry, {"en-00000000000000a1": due_ms})
        await redis.zadd(keys.scheduled("en"), {"en-00000000000000b2": due_ms})
        assert await enqueue_due_expiries(redis, keys, desk_maxlen=100) == 1
        assert await enqueue_release(redis, keys, "en-00000000000000b2", "en", due_ms, desk_maxlen=100)
        entries = await redis.xrange(keys.desk)
        actions = [DESK_ACTION_ADAPTER.validate_json(fields[b"a"]) for _, fields in entries]
    finally:
        await redis.delete(keys.line_index, keys.expiry, keys.scheduled("en"), keys.desk)
        await redis.aclose()
    assert [type(action) for action in actions] == [ExpireAction, ReleaseAction]
    assert all(action.by == SYSTEM_ACTOR for action in actions)
    assert (SYSTEM_ACTOR.name, SYSTEM_ACTOR.role) == ("scheduler", "system")
