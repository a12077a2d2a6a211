"""The test fixtures' own promises (tests/conftest.py): teardown is prompt whatever the server does."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator

import pytest

from tests.conftest import TEARDOWN_CLOSE_S, close_promptly, open_reader

# RFC 6455 section 1.3: the GUID a server appends to Sec-WebSocket-Key before hashing.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HELLO_FRAME = b'\x81\x10{"type":"hello"}'  # FIN + text opcode, 16-byte payload (unmasked, server side)


class SilentServer:
    """A WebSocket server that completes the opening handshake, sends `hello`, then never answers a close
    frame (a stopped or wedged peer): what websockets' default close() waits 10 s for."""

    def __init__(self) -> None:
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            + HELLO_FRAME
        )
        await writer.drain()
        try:
            while await reader.read(4096):  # swallow the close frame; never answer it
                pass
        except ConnectionError:
            pass
        self.closed_by_peer.set()
        writer.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    silent = SilentServer()
    silent.server = await asyncio.start_server(silent._serve, "127.0.0.1", 0)
    yield silent
    silent.server.close()
    await silent.server.wait_closed()


async def test_readers_are_closed_promptly_when_the_server_never_answers_the_close(
    silent_server: SilentServer,
) -> None:
    """Closing readers whose server never completes the close handshake takes about TEARDOWN_CLOSE_S, not
    websockets' default 10 s close_timeout, and the connection is really gone afterwards."""
    readers = [await open_reader(silent_server.url) for _ in range(3)]
    async with asyncio.timeout(TEARDOWN_CLOSE_S + 1.5):
        await close_promptly(readers)
    async with asyncio.timeout(1.0):
        await silent_server.closed_by_peer.wait()
    assert all(reader.ws.transport.is_closing() for reader in readers)
