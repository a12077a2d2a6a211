"""flashwire.workers.apply: each desk entry reaches the ticker exactly once, in desk order, however many
appliers race (against a private redis-server)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.dev.redis_server import RedisProcess
from flashwire.workers.apply import Applier


def _action(kind: str, line_id: str, at: int, **extra: Any) -> bytes:
    """A desk entry's `a` field, shaped as service/api.py writes it."""
    return orjson.dumps(
        {
            "action": kind,
            "id": line_id,
            "edition": "en",
            "at": at,
            "by": {"token": "t1", "name": "Amal"},
            **extra,
        }
    )


def _post(line_id: str, text: str, at: int) -> bytes:
    line = {
        "text": text,
        "urgency": "urgent",
        "topics": ["politics"],
        "url": None,
        "expires_at_ms": at + 3_600_000,
    }
    return _action("post", line_id, at, line=line)


async def _ticker(redis: Redis, keys: Keys) -> list[tuple[str, dict[str, Any]]]:
    entries = await redis.xrange(keys.ticker("en"))
    return [(fields[b"t"].decode(), orjson.loads(fields[b"d"])) for _, fields in entries]


async def test_applier_applies_each_desk_entry_exactly_once(redis_server: RedisProcess) -> None:
    """Two racing appliers, then repeated applies, leave exactly one ticker event per desk entry, in order."""
    keys = Keys("fw")
    settings = Settings(redis_url=redis_server.url, node_name="test")
    first, second = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        at = now_ms()
        await first.xadd(keys.desk, {"a": _post("en-1", "Death toll rises to 12.", at)})
        correction = {"text": "Death toll rises to 21."}
        last = (
            await first.xadd(keys.desk, {"a": _action("correct", "en-1", at + 5, changes=correction)})
        ).decode()

        a, b = Applier(first, keys, settings), Applier(second, keys, settings)
        done = await asyncio.gather(a.apply_through(last), b.apply_through(last))
        assert sum(done) == 2
        # A worker that crashed after writing but before acknowledging applies the entries again.
        assert await a.apply_through(last) == 0
        assert await b.apply_through(last) == 0
        assert list(await asyncio.gather(a.apply_through(last), b.apply_through(last))) == [0, 0]

        events = await _ticker(first, keys)
        assert [(kind, body["line"]["id"], body["line"]["version"]) for kind, body in events] == [
            ("line", "en-1", 1),
            ("update", "en-1", 2),
        ]
        assert events[1][1]["line"]["text"] == "Death toll rises to 21."
        assert await a.applied_cursor() == last
        state = orjson.loads(await first.get(keys.line("en-1")))
        assert (state["version"], state["text"]) == (2, "Death toll rises to 21.")
        assert await first.llen(keys.history("en-1")) == 2
        assert await first.zrange(keys.live("en"), 0, -1) == [b"en-1"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_many_racing_appliers_keep_desk_order(redis_server: RedisProcess) -> None:
    """Four appliers racing over 120 posts and corrections produce exactly one event each, in desk order."""
    keys = Keys("fw")
    settings = Settings(redis_url=redis_server.url, node_name="test")
    clients = [Redis.from_url(redis_server.url) for _ in range(4)]
    try:
        at = now_ms()
        expected: list[tuple[str, str, int]] = []
        last = ""
        for i in range(60):
            await clients[0].xadd(keys.desk, {"a": _post(f"en-{i}", f"Line {i}.", at + i)})
            expected.append(("line", f"en-{i}", 1))
            target = f"en-{i // 2}"
            fix = _action("correct", target, at + i, changes={"text": f"Line {i // 2}, corrected."})
            last = (await clients[0].xadd(keys.desk, {"a": fix})).decode()
            expected.append(("update", target, 2 if i % 2 == 0 else 3))

        appliers = [Applier(client, keys, settings) for client in clients]
        done = await asyncio.gather(*(applier.apply_through(last) for applier in appliers))
        assert sum(done) == 120
        events = await _ticker(clients[0], keys)
        assert [(kind, body["line"]["id"], body["line"]["version"]) for kind, body in events] == expected
    finally:
        for client in clients:
            await client.aclose()


async def _read(redis: Redis, keys: Keys, consumer: str, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
    """What the consumer group hands `consumer` next, as the desk consumer reads it."""
    response = await redis.xreadgroup(keys.desk_group, consumer, {keys.desk: ">"}, count=count)
    return [(entry_id.decode(), fields) for _, entries in response for entry_id, fields in entries]


async def test_an_entry_read_ahead_of_one_another_worker_holds_waits_for_it(
    redis_server: RedisProcess,
) -> None:
    """The short path (workers/apply.py) never overtakes: with the cursor known, an entry whose
    predecessor another worker read but has not applied is applied after it, both once, in desk
    order; the entries a worker commits itself are acknowledged by their commits."""
    keys = Keys("fw")
    settings = Settings(redis_url=redis_server.url, node_name="test")
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.xgroup_create(keys.desk, keys.desk_group, id="0", mkstream=True)
        at = now_ms()
        for i in range(4):
            await redis.xadd(keys.desk, {"a": _post(f"en-{i}", f"Line {i}.", at + i)})
        a, b = Applier(redis, keys, settings), Applier(redis, keys, settings)
        [first] = await _read(redis, keys, "a", 1)
        # A new applier reads the cursor first (its caller acknowledges), then knows it.
        assert await a.apply_read([first]) == (1, False)
        held = await _read(redis, keys, "b", 1)  # b reads en-1 and stalls
        ahead = await _read(redis, keys, "a", 2)  # a reads en-2 and en-3
        applied, acknowledged = await a.apply_read(ahead)
        assert (applied, acknowledged) == (3, False)  # en-1 first, for b
        assert await b.apply_read(held) == (0, False)  # nothing left for b: its caller acknowledges
        await redis.xack(keys.desk, keys.desk_group, *(entry_id for entry_id, _ in held))
        events = await _ticker(redis, keys)
        assert [body["line"]["id"] for _, body in events] == ["en-0", "en-1", "en-2", "en-3"]
        assert (await redis.xpending(keys.desk, keys.desk_group))["pending"] == 0
    finally:
        await redis.aclose()


async def test_a_remembered_line_changed_elsewhere_is_read_again(redis_server: RedisProcess) -> None:
    """A worker plans a follow-up from the line as it last wrote it; when another worker changed
    the line meanwhile, or it is gone from Redis, the commit notices and the plan is made again
    from the stored line: the second correction builds on the first, and a correction of a line
    that is no longer stored changes nothing."""
    keys = Keys("fw")
    settings = Settings(redis_url=redis_server.url, node_name="test")
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.xgroup_create(keys.desk, keys.desk_group, id="0", mkstream=True)
        at = now_ms()
        a, b = Applier(redis, keys, settings), Applier(redis, keys, settings)

        async def desk(action: bytes) -> list[tuple[str, dict[bytes, bytes]]]:
            await redis.xadd(keys.desk, {"a": action})
            return await _read(redis, keys, "c", 1)

        assert await a.apply_read(await desk(_post("en-1", "Toll at 12.", at))) == (1, False)
        assert await a.apply_read(await desk(_post("en-2", "Polls open.", at))) == (1, True)
        fix = _action("correct", "en-1", at + 1, changes={"text": "Toll at 21."})
        assert await b.apply_read(await desk(fix)) == (1, False)
        # a remembers en-1 at version 1, and its cursor is behind: it reads both again.
        fix = _action("correct", "en-1", at + 2, changes={"urgency": "flash"})
        assert await a.apply_read(await desk(fix)) == (1, False)
        await redis.delete(keys.line("en-2"))  # gone from Redis (its 30 days), while a remembers it
        fix = _action("correct", "en-2", at + 3, changes={"text": "Polls closed."})
        assert await a.apply_read(await desk(fix)) == (1, True)

        state = orjson.loads(await redis.get(keys.line("en-1")))
        assert (state["version"], state["text"], state["urgency"]) == (3, "Toll at 21.", "flash")
        events = await _ticker(redis, keys)
        assert [(kind, body["line"]["id"], body["line"]["version"]) for kind, body in events] == [
            ("line", "en-1", 1),
            ("line", "en-2", 1),
            ("update", "en-1", 2),
            ("update", "en-1", 3),
        ]
        assert await redis.get(keys.line("en-2")) is None
    finally:
        await redis.aclose()
