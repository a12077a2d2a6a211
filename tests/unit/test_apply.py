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
