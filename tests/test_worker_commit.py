"""The worker's short path (issue 14, workers/apply.py): once it knows the desk's applied cursor,
the worker commits and acknowledges each desk entry it reads in the one script that writes its
ticker event, so a post costs the worker one round trip after its blocking read. Checked on the
Redis server's MONITOR feed against a real worker process: no read of the cursor, of the desk or
of the line, and no separate XACK, outside the commit."""

from __future__ import annotations

import orjson

from bench.redis_trace import RedisTrace
from flashwire.core.clock import now_ms
from tests.conftest import Stack, eventually

# Reads the short path does inside its commit script, and the client must no longer send.
NOT_SENT = {("GET", "{fw}:desk:applied"), ("XRANGE", "{fw}:desk"), ("XACK", "{fw}:desk")}


def _action(kind: str, line_id: str, at: int, **extra: object) -> bytes:
    """A desk entry's `a` field, shaped as service/api.py writes it."""
    by = {"token": "t1", "name": "Amal"}
    return orjson.dumps({"action": kind, "id": line_id, "edition": "en", "at": at, "by": by, **extra})


def _post(line_id: str, at: int) -> bytes:
    line = {"text": f"Line {line_id}.", "urgency": "urgent", "topics": [], "url": None}
    return _action("post", line_id, at, line={**line, "expires_at_ms": at + 3_600_000})


async def test_the_worker_commits_and_acknowledges_each_entry_in_one_round_trip(stack: Stack) -> None:
    """Posts and corrections after the worker's start-up reach the ticker in desk order, each
    entry acknowledged, with no command of the worker's on the desk, its cursor or a line outside
    its commit scripts."""
    stack.worker()
    redis = stack.redis()
    try:
        at = now_ms()
        first = await redis.xadd(stack.keys.desk, {"a": _post("en-0", at)})
        await stack.until_applied()  # the worker is up, and has read the cursor once

        async def settled() -> bool | None:
            [group] = await redis.xinfo_groups(stack.keys.desk)
            return (group["last-delivered-id"] == first and group["pending"] == 0) or None

        await eventually(settled)  # and has read and acknowledged what its catch-up applied

        async def ticker_length(length: int) -> None:
            async def reached() -> bool | None:
                return await redis.xlen(stack.keys.ticker("en")) >= length or None

            await eventually(reached, timeout_s=10)

        trace = RedisTrace(stack.redis_server.url)
        try:
            for i in range(1, 4):
                await redis.xadd(stack.keys.desk, {"a": _post(f"en-{i}", at + i)})
                await ticker_length(i + 1)
            fix = _action("correct", "en-2", at + 5, changes={"text": "Line two, corrected."})
            await redis.xadd(stack.keys.desk, {"a": fix})
            await ticker_length(5)
        finally:
            commands = trace.stop()

        sent = {
            (command.name, command.args.split(b'"', 2)[1].decode())
            for command in commands
            if command.client != "lua" and command.args.startswith(b' "')
        }
        assert sent & NOT_SENT == set()
        assert not any(name == "GET" and key.startswith("{fw}:line:") for name, key in sent)
        entries = await redis.xrange(stack.keys.ticker("en"))
        ids = [orjson.loads(fields[b"d"])["line"]["id"] for _, fields in entries]
        assert ids == ["en-0", "en-1", "en-2", "en-3", "en-2"]
        assert (await redis.xpending(stack.keys.desk, stack.keys.desk_group))["pending"] == 0
    finally:
        await redis.aclose()
