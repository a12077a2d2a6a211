"""The key layout against a real 3-primary Redis Cluster (tests/redis_cluster.py): the desk apply
step and the snapshot read run on it with the hash-tagged keys, and the same code with the tags
taken off is refused (CROSSSLOT): the Cluster in these tests does enforce slots, so the stack
tests run over it (`stack` parametrized with "cluster") prove the layout, not a lenient server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.redis_cluster import prepare
from flashwire.core.settings import Settings
from flashwire.workers.apply import Applier
from tests.redis_cluster import RedisCluster3


@dataclass(frozen=True)
class UntaggedKeys(Keys):
    """The layout before the Cluster work: no hash tags (every key hashes on its whole name)."""

    @property
    def tag(self) -> str:
        return self.prefix


def _post(line_id: str, at: int) -> bytes:
    line = {
        "text": "Polls close.",
        "urgency": "urgent",
        "topics": [],
        "url": None,
        "expires_at_ms": at + 60_000,
    }
    by = {"token": "t1", "name": "Amal"}
    return orjson.dumps({"action": "post", "id": line_id, "edition": "en", "at": at, "by": by, "line": line})


async def _apply_one_post(redis: Redis, keys: Keys) -> int:
    """Append one post to the desk and apply it; how many entries were applied."""
    desk_id = (await redis.xadd(keys.desk, {"a": _post("en-1", now_ms())})).decode()
    applier = Applier(redis, keys, Settings(redis_url="redis://unused", node_name="test"))
    return await applier.apply_through(desk_id)


@pytest.fixture
async def cluster_client(redis_cluster: RedisCluster3) -> AsyncIterator[Redis]:
    redis_cluster.flush()
    client = cast(Redis, RedisCluster.from_url(redis_cluster.url))
    await prepare(client)
    yield client
    await client.aclose()


async def test_the_apply_step_runs_on_a_cluster_with_the_tagged_layout(cluster_client: Redis) -> None:
    keys = Keys("fw")
    assert await _apply_one_post(cluster_client, keys) == 1
    [(_, fields)] = await cluster_client.xrange(keys.ticker("en"))
    assert fields[b"t"] == b"line"
    assert await cluster_client.zrange(keys.live("en"), 0, -1) == [b"en-1"]


async def test_the_same_step_without_hash_tags_is_refused_crossslot(cluster_client: Redis) -> None:
    """The desk, the cursor, the ticker and the line hash to different slots without the tag."""
    keys = UntaggedKeys("fw")
    slots = {await cluster_client.cluster_keyslot(key) for key in (keys.desk_applied, keys.ticker("en"))}
    assert len(slots) == 2
    # redis-py's Cluster client refuses it before sending ...
    with pytest.raises(RedisClusterException, match="all keys must map to the same key slot"):
        await _apply_one_post(cluster_client, keys)
    # ... and so does the server, for a client that sends it anyway.
    cluster = cast(RedisCluster, cluster_client)
    node = cluster.get_node_from_key(keys.desk_applied)
    direct = Redis(host=node.host, port=node.port)
    try:
        with pytest.raises(ResponseError, match="CROSSSLOT"):
            await direct.eval("return 1", 2, keys.desk_applied, keys.ticker("en"))
    finally:
        await direct.aclose()
