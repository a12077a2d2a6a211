"""The main Redis client: a plain `Redis`, or a `RedisCluster` when FLASHWIRE_REDIS_CLUSTER is on.

Flashwire's code is written against `redis.asyncio.Redis`. With a Cluster the same code runs on
`redis.asyncio.cluster.RedisCluster` (redis-py 5.x) because of how it uses Redis:

- every Lua script declares its keys and every multi-key command stays in one hash slot
  (flashwire/core/keys.py), so the Cluster client routes each one to the shard that owns it;
- pipelines are `transaction=False` (the Cluster client splits them per shard); redis-py 5's
  async Cluster client has no transactions and no pub/sub (../shared/PITFALLS.md 0.1), which
  the live path, the desk and the schedule never use. The push registry and the webhook
  endpoint store still use WATCH/MULTI and do not run on a Cluster yet (docs/operations.md);
- `prepare()` initialises the Cluster client (slot map, nodes) before the first concurrent
  scripts: without it, concurrent `register_script` calls fail intermittently (PITFALLS 3.10).

The client is returned typed as `Redis`: the two classes share the command methods Flashwire
calls, and mypy cannot see that structurally (redis-py's command mixins are typed for both).
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from flashwire.core.settings import Settings


def main_redis(settings: Settings, **options: Any) -> Redis:
    """A client of the main Redis (REDIS_URL): a Cluster client (REDIS_URL naming one seed node)
    when FLASHWIRE_REDIS_CLUSTER is on; `options` (timeouts, keepalive) go to every connection."""
    if settings.redis_cluster:
        return cast(Redis, RedisCluster.from_url(settings.redis_url, **options))
    return Redis.from_url(settings.redis_url, **options)


def is_cluster(redis: Redis) -> bool:
    """Whether `redis` is a Cluster client."""
    return isinstance(redis, RedisCluster)


async def prepare(redis: Redis) -> None:
    """Learn a Cluster's slot map now, before scripts run concurrently (PITFALLS 3.10); nothing for
    a plain client, which connects on first use."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
