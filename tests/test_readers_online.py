"""Readers online now per edition over every node, and reach that counts readers, not desks.

The desk page follows its edition's ticker over the reader protocol; it says so with
`role=desk` (docs/protocol.md 2.4) and is then counted in neither reach nor the readers online.
Real nodes (`flashwire serve`) on one real Redis, real WebSocket and SSE readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flashwire.service.reach import READERS_PUBLISH_S, READERS_TTL_MS
from tests.conftest import InProcessApp, Reader, ServiceNode, Stack, auth, open_reader, post_line


class SseReader:
    """An SSE stream read in a task, its messages parsed."""

    def __init__(self, node: ServiceNode, query: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._client = httpx.AsyncClient(base_url=node.url, timeout=10)
        self._task = asyncio.create_task(self._read(query))

    async def _read(self, query: str) -> None:
        async with self._client.stream("GET", f"/sse?{query}") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    self.messages.append(orjson.loads(line.removeprefix("data:")))

    async def next_of(self, kind: str, count: int = 1, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The first `count` messages of type `kind`, waiting for them."""
        async with asyncio.timeout(timeout_s):
            while True:
                found = [m for m in self.messages if m["type"] == kind]
                if len(found) >= count:
                    return found[:count]
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._client.aclose()


@pytest.fixture
async def streams() -> Any:
    opened: list[SseReader] = []
    yield opened
    for stream in opened:
        await stream.close()


async def online(client: httpx.AsyncClient, token: str, edition: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/editions/{edition}/readers", headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def until_online(
    client: httpx.AsyncClient, token: str, expected: dict[str, tuple[int, int]], timeout_s: float = 5.0
) -> float:
    """Poll until every edition shows (readers, nodes) as expected; the seconds it took."""
    started = time.monotonic()
    while True:
        seen = {}
        for edition in expected:
            body = await online(client, token, edition)
            seen[edition] = (body["readers"], body["nodes"])
        if seen == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"online {seen}, expected {expected}"
        await asyncio.sleep(0.1)


def gauge(text: str, name: str, edition: str) -> float:
    [value] = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == {"edition": edition}
    ]
    return value


async def test_readers_online_sums_websocket_and_sse_readers_per_edition_over_nodes_without_desks(
    stack: Stack, readers: list[Reader], streams: list[SseReader]
) -> None:
    """Two nodes: WebSocket and SSE readers of several editions are summed per edition (a reader of
    two editions counts in each); desk connections (query or subscribe message) count in neither;
    a reader that leaves is gone from the figure within a publish period or two."""
    first, second = stack.service(), stack.service()
    token = await stack.token("editor", ["en", "ar", "es"])
    ws_readers = [await open_reader(first.ws_url, "editions=en") for _ in range(3)]
    ws_readers.append(await open_reader(first.ws_url, "editions=en,ar"))
    ws_readers += [await open_reader(second.ws_url, "editions=en") for _ in range(2)]
    ws_readers.append(await open_reader(second.ws_url, "editions=es"))
    desk = await open_reader(first.ws_url, "editions=en&role=desk")
    desk_by_message = await open_reader(second.ws_url)
    subscribe = {"type": "subscribe", "editions": ["en"], "role": "desk"}
    await desk_by_message.ws.send(orjson.dumps(subscribe).decode())
    readers.extend([*ws_readers, desk, desk_by_message])
    streams.extend(
        [
            SseReader(first, "editions=ar"),
            SseReader(second, "editions=en"),
            SseReader(second, "editions=en"),
            SseReader(second, "editions=en,es&role=desk"),
        ]
    )
    for reader in ws_readers:
        assert "role" not in await reader.next_of("subscribed")
    for desk_reader in (desk, desk_by_message):
        assert (await desk_reader.next_of("subscribed"))["role"] == "desk"
        await desk_reader.next_of("snapshot")
    roles = [(await stream.next_of("subscribed"))[0].get("role") for stream in streams]
    assert roles == [None, None, None, "desk"]

    async with httpx.AsyncClient(base_url=first.url) as client:
        await until_online(client, token, {"en": (8, 2), "ar": (2, 2), "es": (1, 2)})
        body = await online(client, token, "en")
        assert set(body) == {"edition", "readers", "nodes", "at"} and body["at"].endswith("Z")
        metrics = (await client.get("/metrics")).text
        assert gauge(metrics, "flashwire_readers", "en") == 4
        assert gauge(metrics, "flashwire_readers", "ar") == 2
        assert gauge(metrics, "flashwire_desks", "en") == 1

        # Two readers of `en` on the second node leave.
        await ws_readers[4].ws.close()
        await streams[1].close()
        took = await until_online(client, token, {"en": (6, 2), "ar": (2, 2), "es": (1, 2)})
        assert took < 3 * READERS_PUBLISH_S + 1


async def test_a_killed_node_drops_out_of_readers_online_within_the_ttl(
    stack: Stack, readers: list[Reader]
) -> None:
    """SIGKILL a node: its readers leave the figure within the TTL of its counts (it cannot say goodbye)."""
    first, second = stack.service(), stack.service()
    token = await stack.token("editor", ["en"])
    on_first = [await open_reader(first.ws_url, "editions=en") for _ in range(2)]
    on_second = [await open_reader(second.ws_url, "editions=en") for _ in range(3)]
    readers.extend(on_first + on_second)
    for reader in on_first + on_second:
        await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=first.url) as client:
        await until_online(client, token, {"en": (5, 2)})
        second.kill()
        took = await until_online(client, token, {"en": (2, 1)}, timeout_s=READERS_TTL_MS / 1000 + 2)
    assert took <= READERS_TTL_MS / 1000 + 0.5, took


async def test_reach_counts_readers_and_not_desks(
    stack: Stack, readers: list[Reader], streams: list[SseReader]
) -> None:
    """A line's reach counts the readers that got it (WebSocket and SSE, live and by replay), and
    none of the desks that got it the same ways."""
    stack.worker()
    first, second = stack.service(), stack.service()
    editor = await stack.token("editor", ["en"])
    ws_readers = [await open_reader(first.ws_url, "editions=en") for _ in range(2)]
    desks = [
        await open_reader(first.ws_url, "editions=en&role=desk"),
        await open_reader(second.ws_url, "editions=en&role=desk"),
    ]
    readers.extend(ws_readers + desks)
    streams.extend([SseReader(second, "editions=en"), SseReader(second, "editions=en&role=desk")])
    for reader in ws_readers + desks:
        await reader.next_of("snapshot")
    [snapshot] = await streams[0].next_of("snapshot")
    await streams[1].next_of("snapshot")
    async with httpx.AsyncClient(base_url=first.url) as client:
        posted = await post_line(client, editor, "Counted once per reader")
        for reader in ws_readers + desks:
            await reader.events(1)
        for stream in streams:
            await stream.next_of("line")
        # A reader and a desk that resume from before the line get it by replay.
        cursor = f"en:{snapshot['cursor']}"
        late = [
            await open_reader(second.ws_url, f"editions=en&since={cursor}"),
            await open_reader(second.ws_url, f"editions=en&since={cursor}&role=desk"),
        ]
        readers.extend(late)
        for reader in late:
            await reader.events(1)
        deadline = time.monotonic() + 5
        while True:
            detail = (await client.get(f"/api/v1/lines/{posted['id']}", headers=auth(editor))).json()
            if detail["reach"].get("1", {}).get("readers", 0) >= 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        # Reach is flushed every 0.2 s: after several flushes, a desk's delivery would show.
        await asyncio.sleep(1.0)
        detail = (await client.get(f"/api/v1/lines/{posted['id']}", headers=auth(editor))).json()
        assert detail["reach"]["1"]["readers"] == 4, detail["reach"]
        listing = (await client.get("/api/v1/editions/en/lines", headers=auth(editor))).json()
        assert listing["lines"][0]["reach"]["readers"] == 4


async def test_a_role_other_than_reader_or_desk_is_refused_naming_the_field(
    stack: Stack, readers: list[Reader]
) -> None:
    """`role` is reader or desk: anything else is 4400 (WebSocket) or 400 (SSE) naming `role`."""
    node = stack.service()
    by_query = await open_reader(node.ws_url, "editions=en&role=robot")
    by_message = await open_reader(node.ws_url)
    await by_message.ws.send(orjson.dumps({"type": "subscribe", "role": 7}).decode())
    readers.extend([by_query, by_message])
    for reader in (by_query, by_message):
        async with asyncio.timeout(10):  # heartbeats would keep an accepted reader open forever
            assert await reader.until_closed() == 4400
        assert (reader.close_reason or "").startswith("role: must be reader or desk")
    async with httpx.AsyncClient(base_url=node.url) as client:
        response = await client.get("/sse?editions=en&role=robot")
        assert response.status_code == 400
        assert response.json()["error"]["field"] == "role"


async def test_readers_online_needs_read_on_the_edition(app: InProcessApp) -> None:
    """The figure is for the edition's newsroom: 401 without a token, 403 for another edition's,
    404 for an unknown edition; the node serving the request publishes its own counts."""
    en_only = await app.token("editor", ["en"])
    assert (await app.client.get("/api/v1/editions/en/readers")).status_code == 401
    forbidden = await app.client.get("/api/v1/editions/ar/readers", headers=auth(en_only))
    assert forbidden.status_code == 403
    unknown = await app.client.get("/api/v1/editions/fr/readers", headers=auth(en_only))
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "edition"
    await until_online(app.client, en_only, {"en": (0, 1)})
