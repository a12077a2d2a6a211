"""Snapshots hold every live line that matches the reader's filter; the cap applies after the filter."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import Reader, Stack, auth, open_reader, post_line


async def _post_many(
    client: httpx.AsyncClient, token: str, count: int, prefix: str, **fields: Any
) -> list[str]:
    ids = []
    for i in range(count):
        ids.append((await post_line(client, token, f"{prefix} {i}", **fields))["id"])
    return ids


async def _wait_applied(stack: Stack, edition: str, count: int) -> None:
    redis = stack.redis()
    try:
        for _ in range(400):
            if await redis.xlen(stack.keys.ticker(edition)) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the worker did not apply {count} lines")
    finally:
        await redis.aclose()


async def test_a_filtered_snapshot_is_not_starved_by_newer_lines_outside_the_filter(
    stack: Stack, readers: list[Reader]
) -> None:
    """30 live `health` lines, then 200 `economy` lines: a `topics=health` reader's snapshot holds all 30
    (newest first), and so does an SSE reader's; an unfiltered reader's holds all 230."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        health = await _post_many(client, editor, 30, "health", topics=["health"])
        await _post_many(client, editor, 200, "economy", topics=["economy"])
    await _wait_applied(stack, "en", 230)
    filtered = await open_reader(node.ws_url, "editions=en&topics=health")
    everything = await open_reader(node.ws_url, "editions=en")
    readers.extend([filtered, everything])
    snapshot = await filtered.next_of("snapshot")
    assert [line["id"] for line in snapshot["lines"]] == list(reversed(health))
    assert len((await everything.next_of("snapshot"))["lines"]) == 230
    async with (
        httpx.AsyncClient(base_url=node.url) as client,
        client.stream("GET", "/sse?editions=en&topics=health") as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"type":"snapshot"' in line:
                assert line.count('"topics":["health"]') == 30
                break


async def test_the_snapshot_cap_applies_after_the_filter_with_pinned_lines_first(
    stack: Stack, readers: list[Reader]
) -> None:
    """With FLASHWIRE_SNAPSHOT_MAX_LINES=10, a filtered reader gets the 10 first of its own matching lines:
    the pinned one (the oldest) first, then the newest; lines outside the filter take no place."""
    stack.worker()
    node = stack.service(FLASHWIRE_SNAPSHOT_MAX_LINES="10")
    chief = await stack.token("chief", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        health = await _post_many(client, chief, 25, "health", topics=["health"])
        pinned = await client.post(f"/api/v1/lines/{health[0]}/pin", headers=auth(chief))
        assert pinned.status_code == 201, pinned.text
        await _post_many(client, chief, 40, "sports", topics=["sports"])
    await _wait_applied(stack, "en", 25 + 1 + 40)
    reader = await open_reader(node.ws_url, "editions=en&topics=health")
    readers.append(reader)
    snapshot = await reader.next_of("snapshot")
    assert [line["id"] for line in snapshot["lines"]] == [health[0], *reversed(health[-9:])]
    assert snapshot["lines"][0]["pinned"] is True
