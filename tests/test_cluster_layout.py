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
from flashwire.core.push_models import RegistrationBase, UpdateBase
from flashwire.core.push_registry import PushRegistry, RegistrationLimit
from flashwire.core.redis_cluster import prepare
from flashwire.core.settings import Settings
from flashwire.core.webhook_store import EndpointStore, TooManyEndpoints
from flashwire.service.events import Event
from flashwire.service.reach import ReachRecorder
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


async def test_push_registrations_are_stored_changed_and_removed_on_a_cluster(cluster_client: Redis) -> None:
    """The registry's compare-and-set scripts (no WATCH/MULTI, which redis-py 5's Cluster client
    lacks) keep a registration, its index sets and its client set together, and hold the bound."""
    registry = PushRegistry(cluster_client, Keys("fw"))
    keys = Keys("fw")
    request = RegistrationBase(platform="fcm", token="t" * 40, editions=["en"], urgency="urgent")
    stored, _ = await registry.register(request, client="10.0.0.1", now_ms=now_ms(), max_per_client=1)
    reg_id = stored.record["id"]
    assert stored.created
    assert await cluster_client.zrange(keys.push_targets("en", "urgent"), 0, -1) == [reg_id.encode()]
    other = RegistrationBase(platform="fcm", token="u" * 40, editions=["en"])
    with pytest.raises(RegistrationLimit):
        await registry.register(other, client="10.0.0.1", now_ms=now_ms(), max_per_client=1)
    choices = UpdateBase(editions=["es"], urgency="flash")
    await registry.update(stored.record, choices)
    assert await cluster_client.zcard(keys.push_targets("en", "urgent")) == 0
    assert await cluster_client.zrange(keys.push_targets("es", "flash"), 0, -1) == [reg_id.encode()]
    assert await registry.remove(reg_id)
    assert await cluster_client.zcard(keys.push_targets("es", "flash")) == 0
    assert await cluster_client.zcard(keys.push_client("10.0.0.1")) == 0
    assert await registry.get(reg_id) is None


async def test_webhook_endpoints_are_created_changed_and_deleted_on_a_cluster(cluster_client: Redis) -> None:
    store = EndpointStore(cluster_client, Keys("fw"))
    fields = {
        "owner_name": "Partner",
        "url": "https://partner.example/hook",
        "editions": ["en"],
        "topics": [],
    }
    _, record = await store.create(owner="p1", min_urgency="flash", max_per_owner=1, **fields)
    with pytest.raises(TooManyEndpoints):
        await store.create(owner="p1", min_urgency="flash", max_per_owner=1, **fields)
    changed = await store.change(record.id, lambda current: current.model_copy(update={"topics": ["sports"]}))
    assert changed is not None and (await store.get(record.id)) == changed
    assert await store.delete(record.id)
    assert await store.get(record.id) is None


async def test_reach_of_several_lines_is_flushed_on_a_cluster(cluster_client: Redis) -> None:
    """Reach hashes are untagged (spread over the shards): one flush over lines in different slots
    is one script call per line, not one call over all of them (CROSSSLOT)."""
    keys = Keys("fw")
    line_ids = [f"en-{n}" for n in range(8)]
    assert len({await cluster_client.cluster_keyslot(keys.reach(i)) for i in line_ids}) > 1
    recorder = ReachRecorder(cluster_client, keys, "node-1")
    now = now_ms()
    for line_id in line_ids:
        entry = {b"t": b"line", b"d": orjson.dumps({"line": {"id": line_id, "version": 1}})}
        recorder.delivered(Event.from_entry("en", f"{now}-0", entry), now, count=3)
    await recorder.flush()
    for line_id in line_ids:
        assert await cluster_client.hget(keys.reach(line_id), "1:node-1:n") == b"3"
