"""flashwire.service.history: the snapshot script gets every line key in KEYS (a Redis Cluster
routes and checks a script by them), so the live ids are read first; if the live set changes in
between, the read is made again rather than answering with a stale set (against a private
redis-server; the change is made for real, between the two reads)."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.dev.redis_server import RedisProcess
from flashwire.service.history import TickerHistory
from flashwire.service.hub import Stats

KEYS = Keys("fw")


async def test_a_live_set_changed_between_the_two_reads_is_read_again(redis_server: RedisProcess) -> None:
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.xadd(KEYS.ticker("en"), {"t": "line", "d": "{}"})
        for n, line_id in enumerate(["en-1", "en-2"]):
            await redis.set(KEYS.line(line_id), orjson.dumps({"id": line_id}))
            await redis.zadd(KEYS.live("en"), {line_id: n})
        history = TickerHistory(redis, redis, KEYS, Settings(redis_url=redis_server.url), Stats())
        reads = 0
        original = redis.zrevrange

        async def zrevrange_then_a_post(*args: Any, **kwargs: Any) -> Any:
            """The first read of the live ids is followed at once by a third line going live."""
            nonlocal reads
            reads += 1
            ids = await original(*args, **kwargs)
            if reads == 1:
                await redis.set(KEYS.line("en-3"), orjson.dumps({"id": "en-3"}))
                await redis.zadd(KEYS.live("en"), {"en-3": 2})
            return ids

        redis.zrevrange = zrevrange_then_a_post  # type: ignore[method-assign]
        result = await history._read_snapshot_entries("en")
        assert reads == 2
        assert [orjson.loads(doc)["id"] for doc in result[1:]] == ["en-3", "en-2", "en-1"]
    finally:
        await redis.aclose()
