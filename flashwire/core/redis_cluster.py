"""Running on Redis Cluster: what lets code written for `Redis` run on `RedisCluster`, and its set-up.

flashwire/core/redis_connect.py opens the Cluster client when FLASHWIRE_REDIS_CLUSTER is on.

Flashwire's code is written against `redis.asyncio.Redis`. With a Cluster the same code runs on
`redis.asyncio.cluster.RedisCluster` (redis-py 5.x) because of how it uses Redis:

- every Lua script declares its keys and every multi-key command stays in one hash slot
  (flashwire/core/keys.py), so the Cluster client routes each one to the shard that owns it;
- pipelines are `transaction=False` (the Cluster client splits them per shard); redis-py 5's
  async Cluster client has no transactions and no pub/sub (../shared/PITFALLS.md 0.1), which
  the live path, the desk and the schedule never use; the push registry and the webhook endpoint
  store compare and set in scripts instead of WATCH/MULTI;
- `prepare()` initialises the Cluster client (slot map, nodes) before the first concurrent
  scripts: without it, concurrent `register_script` calls fail intermittently (PITFALLS 3.10).

The client is returned typed as `Redis`: the two classes share the command methods Flashwire
calls, and mypy cannot see that structurally (redis-py's command mixins are typed for both).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster


def is_cluster(redis: Redis) -> bool:
    """Whether `redis` is a Cluster client."""
    return isinstance(redis, RedisCluster)


async def prepare(redis: Redis) -> None:
    """Learn a Cluster's slot map now, before scripts run concurrently (PITFALLS 3.10); nothing for
    a plain client, which connects on first use."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
