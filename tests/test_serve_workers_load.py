"""Must-show 5 of issue 13: `flashwire serve --workers 2`, 10,000 WebSocket readers spread over
both processes of one port, several lines, every line reaching every reader exactly once.

The readers are picows connections in this test's process (the project's fastest client,
bench/loadgen_picows.py): 10,000 sockets fit within the 20,000 open files a process may have.
"""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import orjson
import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from tests.conftest import Stack, auth
from tests.test_serve_workers import start_node

READERS = 10_000
LINES = 5
CONNECTING_AT_ONCE = 500


class LineReader(WSListener):  # type: ignore[misc]
    """One reader: the process that greeted it, whether its snapshot came, the lines it got."""

    def __init__(self, ready: collections.Counter[str]) -> None:
        self.node = ""
        self.lines: list[str] = []
        self.ready = ready
        self.closed = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.closed = True
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if payload.startswith(b'{"type":"line"'):
            self.lines.append(orjson.loads(payload)["line"]["text"])
        elif payload.startswith(b'{"type":"hello"'):
            self.node = orjson.loads(payload)["node"]
        elif payload.startswith(b'{"type":"snapshot"'):
            self.ready["snapshots"] += 1


@pytest.mark.slow
@pytest.mark.load
@pytest.mark.timeout(90)
async def test_ten_thousand_readers_over_two_processes_get_every_line_once(stack: Stack) -> None:
    """10,000 readers on one port served by two processes: both take thousands, and each of 5
    lines reaches every reader exactly once, in order."""
    stack.worker()
    node = start_node(
        stack,
        2,
        FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT="19000",
        FLASHWIRE_HEARTBEAT_S="60",
    )
    token = await stack.token()
    ready: collections.Counter[str] = collections.Counter()
    readers = [LineReader(ready) for _ in range(READERS)]
    transports: list[WSTransport] = []
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    started = time.monotonic()

    async def connect(reader: LineReader) -> None:
        async with gate:
            transport, _ = await ws_connect(
                lambda: reader, f"{node.ws_url}?editions=en", websocket_handshake_timeout=30
            )
            transports.append(transport)

    try:
        await asyncio.gather(*(connect(reader) for reader in readers))
        while ready["snapshots"] < READERS:
            assert time.monotonic() - started < 45, f"{ready['snapshots']} of {READERS} readers ready"
            await asyncio.sleep(0.05)
        connected_s = time.monotonic() - started
        spread = collections.Counter(reader.node for reader in readers)
        print(f"\n{READERS} readers connected in {connected_s:.1f} s; per process: {dict(spread)}")
        assert len(spread) == 2 and min(spread.values()) >= READERS // 10, spread

        texts = [f"load {i}" for i in range(LINES)]
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            for text in texts:
                answer = await client.post(
                    "/api/v1/lines", json={"edition": "en", "text": text}, headers=auth(token)
                )
                assert answer.status_code == 201, answer.text
                await asyncio.sleep(0.1)
        sent = time.monotonic()
        while sum(len(reader.lines) for reader in readers) < READERS * LINES:
            if time.monotonic() - sent > 20:
                break
            await asyncio.sleep(0.05)
        print(f"every line at every reader {time.monotonic() - sent:.2f} s after the last post")
        await asyncio.sleep(0.5)  # for a duplicate to show, were one sent
        wrong = [reader.lines for reader in readers if reader.lines != texts]
        assert not wrong, f"{len(wrong)} readers without every line exactly once, e.g. {wrong[:3]}"
        assert not any(reader.closed for reader in readers)
    finally:
        for transport in transports:
            transport.disconnect()
