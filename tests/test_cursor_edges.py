"""Resume cursors at the edges: numbers no stream id can hold, and `0-0` on a trimmed log."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Reader, Stack, open_reader, post_line


@pytest.mark.parametrize(
    "cursor", ["99999999999999999999-0", "1-99999999999999999999", "18446744073709551616"]
)
async def test_a_cursor_beyond_64_bits_is_a_bad_request(stack: Stack, cursor: str) -> None:
    """Stream ids are two unsigned 64-bit numbers: a larger cursor is refused as malformed (4400, SSE 400),
    not resumed, retried forever or answered with an internal error."""
    node = stack.service()
    reader = await open_reader(node.ws_url, f"editions=en&since=en:{cursor}")
    assert await reader.until_closed() == 4400
    assert (reader.close_reason or "").startswith("since: malformed cursor")
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        refused = await client.get(f"/sse?editions=en&since=en:{cursor}")
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "since"


async def test_since_zero_replays_an_untrimmed_log_and_resets_on_a_trimmed_one(
    stack: Stack, readers: list[Reader]
) -> None:
    """`since=0-0` means "from the start": replayed while the log still begins with its first entry, a reset
    snapshot once the worker has trimmed it, whatever retention the node itself is configured with."""
    stack.worker(FLASHWIRE_TICKER_RETENTION="10")
    node = stack.service()  # the node's own setting is the default 10,000
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        for i in range(3):
            await post_line(client, editor, f"early {i}")
        whole = await open_reader(node.ws_url, "editions=en&since=0-0")
        readers.append(whole)
        early = await whole.events(3)
        assert [e["line"]["text"] for e in early] == ["early 0", "early 1", "early 2"]
        for i in range(300):
            await post_line(client, editor, f"later {i}")
    redis = stack.redis()
    try:
        for _ in range(200):  # until the worker has trimmed the first entries away
            oldest = await redis.xrange(stack.keys.ticker("en"), count=1)
            if oldest[0][0].decode() != early[0]["cursor"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker never trimmed the log")
    finally:
        await redis.aclose()
    trimmed = await open_reader(node.ws_url, "editions=en&since=0-0")
    readers.append(trimmed)
    snapshot = await trimmed.next_of("snapshot")
    assert snapshot["reset"] is True and snapshot["reason"] == "cursor is older than the retained log"
