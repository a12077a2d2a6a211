"""Readers that misbehave: one that stops reading, one that vanishes, and bad subscriptions."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import Reader, ServiceNode, Stack, metric, open_reader, post_line
from tests.rawws import RawWebSocket

# Heavy on CPU and timing: these run one after another on one test process (`-n 2 --dist loadgroup`).
pytestmark = pytest.mark.xdist_group("heavy")

LINES = 600
OUTBOX = 40
# Large lines fill the kernel's socket buffers quickly, so the outbox overflow comes early.
TEXT_CHARS = 8000


async def _metric(node: ServiceNode, name: str) -> int:
    async with httpx.AsyncClient(base_url=node.url) as client:
        text = (await client.get("/metrics")).text
    return int(metric(text, name))


@pytest.mark.slow
async def test_stalled_reader_is_closed_with_code_and_others_keep_receiving(
    stack: Stack, readers: list[Reader]
) -> None:
    """A subscriber that stops reading is closed with 4001, its queue stays bounded, and the
    other subscribers get every line as fast as when nobody stalls."""
    stack.worker()
    node = stack.service(
        FLASHWIRE_OUTBOX_MAX_FRAMES=str(OUTBOX),
        FLASHWIRE_HEARTBEAT_S="30",
        FLASHWIRE_TEXT_MAX_CHARS=str(TEXT_CHARS),
    )
    editor = await stack.token("editor", ["en"])
    healthy = [await open_reader(node.ws_url, "editions=en") for _ in range(3)]
    readers.extend(healthy)
    for reader in healthy:
        await reader.next_of("snapshot")
    stalled = RawWebSocket(node.port, "editions=en", rcvbuf=4096)
    await asyncio.sleep(0.2)
    text = "Breaking: " + "x" * (TEXT_CHARS - 20)
    peak_outbox = 0
    delays: list[float] = []
    async with httpx.AsyncClient(base_url=node.url) as client:
        for i in range(LINES):
            started = time.monotonic()
            await post_line(client, editor, f"{i} {text}")
            # Every healthy reader gets each line promptly even while one reader is stalled.
            for reader in healthy:
                [event] = await reader.events(1, timeout_s=5)
                assert event["line"]["text"].startswith(f"{i} ")
            delays.append(time.monotonic() - started)
            if i % 50 == 0:
                peak_outbox = max(peak_outbox, await _metric(node, "flashwire_outbox_frames"))
    assert peak_outbox <= OUTBOX * (len(healthy) + 1)
    assert await _metric(node, "flashwire_slow_closed_total") == 1
    # The stalled reader, once it reads again, finds what was buffered and then the close code.
    texts, code = await asyncio.to_thread(stalled.read_until_close, 10.0)
    stalled.close()
    assert code == 4001
    assert 0 < len(texts) < LINES
    assert sorted(delays)[len(delays) // 2] < 0.5


async def test_dead_peer_is_detected_by_heartbeat(stack: Stack) -> None:
    """A peer that never answers pings is dropped within a couple of heartbeat periods."""
    stack.worker()
    node = stack.service(FLASHWIRE_HEARTBEAT_S="1")
    dead = RawWebSocket(node.port, "editions=en")
    try:
        await asyncio.sleep(0.3)
        assert await _metric(node, "flashwire_connections") == 1
        deadline = time.monotonic() + 6
        while await _metric(node, "flashwire_connections") != 0:
            assert time.monotonic() < deadline, "the dead peer was never dropped"
            await asyncio.sleep(0.2)
    finally:
        dead.close()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("editions=xx", "editions"),
        ("editions=en&topics=nonsense", "topics"),
        ("editions=en&min_urgency=loud", "min_urgency"),
        ("editions=en&since=yesterday", "since"),
        ("editions=en,ar&since=1-0", "since"),
    ],
)
async def test_bad_subscription_closes_with_4400_naming_the_field(
    stack: Stack, query: str, field: str
) -> None:
    """A malformed subscription gets close code 4400 with a reason naming the field."""
    node = stack.service()
    reader = await open_reader(node.ws_url, query)
    assert await reader.until_closed() == 4400
    assert reader.close_reason is not None and reader.close_reason.startswith(field)


async def test_subscribe_message_errors_and_second_subscribe(stack: Stack) -> None:
    """A bad first message and a second subscribe both close with 4400 and a reason."""
    node = stack.service()
    reader = await open_reader(node.ws_url)
    await reader.ws.send("not json")
    assert await reader.until_closed() == 4400
    reader = await open_reader(node.ws_url, "editions=en")
    await reader.next_of("snapshot")
    await reader.ws.send('{"type":"subscribe","editions":["ar"]}')
    assert await reader.until_closed() == 4400
    assert "already subscribed" in (reader.close_reason or "")


async def test_connection_limit_closes_with_1013(stack: Stack, readers: list[Reader]) -> None:
    """Beyond the configured connection limit a reader is told to retry later (1013)."""
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS="2")
    readers.extend([await open_reader(node.ws_url, "editions=en") for _ in range(2)])
    refused = Reader(await connect(node.ws_url + "?editions=en"))
    assert await refused.until_closed() == 1013
    assert "retry later" in (refused.close_reason or "")


async def test_ping_message_gets_pong_and_heartbeats_flow(stack: Stack, readers: list[Reader]) -> None:
    """An application-level ping is answered with pong, and heartbeats arrive every heartbeat_s."""
    node = stack.service(FLASHWIRE_HEARTBEAT_S="0.5")
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")
    await reader.ws.send('{"type":"ping"}')
    await reader.next_of("pong", timeout_s=2)
    await reader.next_of("heartbeat", timeout_s=2)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "asgi"])
async def test_an_sse_reader_that_stops_reading_is_cut_off(stack: Stack, direct: bool) -> None:
    """An SSE client that never reads, with more events for it than its outbox (or, once the node
    writes to it directly, its send buffer: service/sse_wire.py) holds, is dropped by the node
    (counted as a slow reader; its connection slot and subscription freed), as a WebSocket gets 4001."""
    node = stack.service(
        FLASHWIRE_OUTBOX_MAX_FRAMES="16", FLASHWIRE_HEARTBEAT_S="30", FLASHWIRE_DIRECT_WRITES=str(int(direct))
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    sock.sendall(f"GET /sse?editions=en HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n\r\n".encode())
    try:
        for _ in range(100):
            if await _metric(node, "flashwire_connections") == 1:
                break
            await asyncio.sleep(0.05)
        for _ in range(100):  # caught up: written to directly, or not at all
            if await _metric(node, "flashwire_direct_writers") == int(direct):
                break
            await asyncio.sleep(0.05)
        assert await _metric(node, "flashwire_direct_writers") == int(direct)
        redis = stack.redis()
        try:
            body = orjson.dumps({"line": {"id": "en-big", "version": 1, "text": "x" * 20_000, "topics": []}})
            for _ in range(400):  # written straight to the ticker: only the node's side matters here
                await redis.xadd(stack.keys.ticker("en"), {"t": "line", "d": body})
        finally:
            await redis.aclose()
        for _ in range(200):
            if await _metric(node, "flashwire_connections") == 0:
                break
            await asyncio.sleep(0.05)
        assert await _metric(node, "flashwire_connections") == 0
        assert await _metric(node, "flashwire_subscriptions") == 0
        assert await _metric(node, "flashwire_slow_closed_total") == 1
    finally:
        sock.close()
    assert "Traceback" not in node.log()
