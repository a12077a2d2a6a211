"""A burst of ticker events reaches a running `flashwire serve`'s readers in one write each.

The burst is written to the ticker in one MULTI/EXEC, so that the node's blocked XREAD returns all
of it at once (Redis serves blocked readers after the transaction), as it does when many posts
land together. The node's /metrics then show how many writes carried how many frames
(`flashwire_direct_writes_total`, `flashwire_direct_frames_total`).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from tests.conftest import Reader, ServiceNode, Stack, eventually, metric, open_reader

BURST = 6


async def _metrics(node: ServiceNode) -> tuple[float, float]:
    """(direct frames, direct writes) the node has counted so far (writes 0 if it does not count them)."""
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    writes = metric(text, "flashwire_direct_writes_total") if "flashwire_direct_writes_total" in text else 0.0
    return metric(text, "flashwire_direct_frames_total"), writes


def _line(line_id: str, text: str, urgency: str, topics: list[str], version: int = 1) -> dict[str, Any]:
    return {
        "id": line_id,
        "version": version,
        "edition": "en",
        "text": text,
        "urgency": urgency,
        "topics": topics,
        "updated_at": "2026-12-08T06:00:00.000Z",
    }


async def _burst(stack: Stack, entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Append `entries` (type, body) to the en ticker in one transaction; their cursors."""
    redis = Redis.from_url(stack.redis_server.url)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            for kind, body in entries:
                pipe.xadd(Keys("fw").ticker("en"), {"t": kind, "d": orjson.dumps(body)})
            ids: list[bytes] = await pipe.execute()
    finally:
        await redis.aclose()
    return [entry_id.decode() for entry_id in ids]


async def _caught_up(node: ServiceNode, readers: list[Reader], queries: list[str]) -> None:
    for query in queries:
        reader = await open_reader(node.ws_url, query)
        readers.append(reader)
        await reader.next_of("snapshot")

    async def all_direct() -> bool | None:
        async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
            text = (await client.get("/metrics")).text
        # Exactly these readers, all written to directly (an earlier test's are gone).
        counts = (metric(text, "flashwire_connections"), metric(text, "flashwire_direct_writers"))
        return True if counts == (len(queries), len(queries)) else None

    await eventually(all_direct, timeout_s=10)


async def test_a_burst_reaches_every_reader_once_and_in_order_in_one_write(
    module_stack: tuple[Stack, ServiceNode], readers: list[Reader]
) -> None:
    """BURST lines read at once reach each of three caught-up readers exactly once, in ticker order,
    and each reader's frames go out in one write: the writes grow by one per reader, the frames by
    BURST per reader."""
    stack, node = module_stack
    await _caught_up(node, readers, ["editions=en"] * 3)
    frames_before, writes_before = await _metrics(node)
    cursors = await _burst(
        stack, [("line", {"line": _line(f"en-b{i}", f"burst {i}", "routine", [])}) for i in range(BURST)]
    )
    for reader in readers:
        got = await reader.events(BURST)
        assert [m["cursor"] for m in got] == cursors, "each line once, in ticker order"
    # A line of its own round: the next thing each reader gets (nothing of the burst came twice).
    after = await _burst(stack, [("line", {"line": _line("en-after", "after", "routine", [])})])
    for reader in readers:
        assert [m["cursor"] for m in await reader.events(1)] == after
    frames_after, writes_after = await _metrics(node)
    assert frames_after - frames_before == 3 * (BURST + 1)
    assert writes_after - writes_before == 3 * 2, (
        f"{writes_after - writes_before} writes carried {frames_after - frames_before} frames: "
        "one write per reader per round expected"
    )


async def test_readers_with_different_filters_each_get_their_lines_of_a_burst(
    module_stack: tuple[Stack, ServiceNode], readers: list[Reader]
) -> None:
    """Five readers with different filters, one burst of four lines and a correction that moves the
    first line from politics to economy: each reader gets exactly what its filter takes (the
    politics readers a withdrawal of the corrected line, retract reason "filtered"), in order, in
    one write."""
    stack, node = module_stack
    queries = [
        "editions=en&topics=politics",
        "editions=en&topics=economy",
        "editions=en&min_urgency=urgent",
        "editions=en&topics=politics,economy&min_urgency=flash",
        "editions=en&topics=sports",
    ]
    await _caught_up(node, readers, queries)
    corrected = _line("en-f1", "politics, corrected to economy", "routine", ["economy"], version=2)
    entries: list[tuple[str, dict[str, Any]]] = [
        ("line", {"line": _line("en-f1", "politics", "routine", ["politics"])}),
        ("line", {"line": _line("en-f2", "economy urgent", "urgent", ["economy"])}),
        ("line", {"line": _line("en-f3", "health flash", "flash", ["health"])}),
        ("line", {"line": _line("en-f4", "both flash", "flash", ["politics", "economy"])}),
        (
            "update",
            {
                "change": "correction",
                "line": corrected,
                "previous": {"topics": ["politics"], "urgency": "routine"},
            },
        ),
    ]
    frames_before, writes_before = await _metrics(node)
    c1, c2, c3, c4, c5 = await _burst(stack, entries)
    # (type, cursor) each reader must get, in this order, and nothing else before the closing line.
    expected = [
        [("line", c1), ("line", c4), ("retract", c5)],
        [("line", c2), ("line", c4), ("update", c5)],
        [("line", c2), ("line", c3), ("line", c4)],
        [("line", c4)],
        [],
    ]
    for reader, wanted in zip(readers, expected, strict=True):
        got = await reader.events(len(wanted))
        assert [(m["type"], m["cursor"]) for m in got] == wanted
        assert all(m["reason"] == "filtered" for m in got if m["type"] == "retract")
    # A line of its own round that every filter takes: the next thing each reader gets.
    closing = await _burst(
        stack, [("line", {"line": _line("en-f6", "all", "flash", ["politics", "economy", "sports"])})]
    )
    for reader in readers:
        assert [m["cursor"] for m in await reader.events(1)] == closing
    frames_after, writes_after = await _metrics(node)
    assert frames_after - frames_before == sum(len(w) + 1 for w in expected)
    readers_in_burst = sum(1 for wanted in expected if wanted)
    assert writes_after - writes_before == readers_in_burst + len(readers), (
        "one write per reader per round, whatever its filter"
    )
