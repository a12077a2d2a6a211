"""An SSE request whose stream never starts gives its connection slot back.

A client that pipelines two requests for /sse and resets the connection leaves the node unable to
send the first response's headers: the stream's generator never runs. The slot it was counted in
must still be given back, or a few such requests lock every reader out (WebSocket 1013, SSE 503).
"""

from __future__ import annotations

import socket
import struct

import httpx

from tests.conftest import Stack, eventually, metric, open_reader

SLOTS = 4
ATTEMPTS = 12


def _pipeline_and_reset(port: int) -> None:
    """Two pipelined GET /sse, then a TCP reset (SO_LINGER 0) without reading anything."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /sse?editions=en HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_sse_requests_reset_before_their_stream_starts_leave_no_slot_taken(stack: Stack) -> None:
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS=str(SLOTS))
    for _ in range(ATTEMPTS):
        _pipeline_and_reset(node.port)

    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:

        async def connections_back_to_zero() -> bool:
            text = (await client.get("/metrics")).text
            return metric(text, "flashwire_connections") == 0 and metric(text, "flashwire_subscriptions") == 0

        await eventually(connections_back_to_zero, timeout_s=10)
    # Every slot is free: as many readers as the limit allows get in.
    readers = [await open_reader(node.ws_url, "editions=en") for _ in range(SLOTS)]
    try:
        for reader in readers:
            assert (await reader.next_of("snapshot"))["type"] == "snapshot"
    finally:
        for reader in readers:
            await reader.ws.close()
