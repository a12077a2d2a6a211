"""Reader connections per client address (issue 10, finding 3): one address cannot take every slot
of a node; the next reader from it is told which limit it hit (WebSocket 1013, SSE 429 with
Retry-After), other addresses are still served, and the address is the real client's only when
the peer is a trusted proxy (FLASHWIRE_TRUSTED_PROXIES). Against real `flashwire serve` processes
(service/client_addresses.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Reader, ServiceNode, Stack, close_promptly, eventually, metric, open_reader

CAP = "3"
CLIENT = "203.0.113.7"
OTHER = "198.51.100.9"
PER_ADDRESS = "too many connections from your address"


async def ws_reader(node: ServiceNode, forwarded_for: str) -> Reader:
    """A WebSocket reader of `en` whose request says X-Forwarded-For: `forwarded_for`, caught up."""
    reader = await open_reader(
        node.ws_url, "editions=en", additional_headers={"X-Forwarded-For": forwarded_for}
    )
    await reader.next_of("snapshot")
    return reader


async def ws_refusal(node: ServiceNode, forwarded_for: str) -> tuple[int | None, str]:
    """The close code and reason of a WebSocket reader refused before `hello`; (None, "served")
    if it is greeted instead."""
    refused = Reader(
        await connect(
            node.ws_url + "?editions=en",
            additional_headers={"X-Forwarded-For": forwarded_for},
            ping_interval=None,
        )
    )
    try:
        await refused.next(timeout_s=5)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "dropped without a close frame"
        return closed.rcvd.code, closed.rcvd.reason
    await close_promptly([refused])
    return None, "served"


async def served_again(node: ServiceNode, forwarded_for: str) -> Reader:
    """A reader from `forwarded_for` once the node serves one again (a reader that just closed
    is counted out when the node has seen its close, a moment later)."""

    async def attempt() -> Reader | None:
        try:
            return await ws_reader(node, forwarded_for)
        except ConnectionClosed:
            return None

    return await eventually(attempt, timeout_s=5)


@asynccontextmanager
async def sse_reader(client: httpx.AsyncClient, forwarded_for: str) -> AsyncIterator[httpx.Response]:
    """An SSE reader of `en` (X-Forwarded-For: `forwarded_for`), open while the context lasts; the
    response is yielded after its first event if it streams, at once if it was refused."""
    headers = {"X-Forwarded-For": forwarded_for}
    async with client.stream("GET", "/sse?editions=en", headers=headers) as response:
        if response.status_code == 200:
            # Held until the context ends: a line iterator that is dropped closes the stream.
            lines = response.aiter_lines()
            while not (await anext(lines)).startswith("data:"):
                pass
        else:
            await response.aread()
        yield response


async def test_one_address_gets_its_cap_then_is_refused_by_name_and_others_are_served(
    stack: Stack, readers: list[Reader]
) -> None:
    """Behind a trusted proxy (127.0.0.1), with 3 reader connections per address: two WebSocket
    readers and one SSE reader from 203.0.113.7 are served; the next WebSocket is closed 1013 with
    the per-address reason and the next SSE request gets 429 with Retry-After, also when the client
    put another address in front of the proxy's; 198.51.100.9 is still served; and once one of the
    three leaves, 203.0.113.7 is served again."""
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT=CAP, FLASHWIRE_TRUSTED_PROXIES="127.0.0.1")
    async with AsyncExitStack() as streams, httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        first = await ws_reader(node, CLIENT)
        readers.extend([first, await ws_reader(node, CLIENT)])
        sse = await streams.enter_async_context(sse_reader(client, CLIENT))
        assert sse.status_code == 200

        code, reason = await ws_refusal(node, CLIENT)
        assert code == 1013
        assert reason.startswith(PER_ADDRESS), reason
        # A value the client wrote itself stays in front of the one the proxy appended.
        code, reason = await ws_refusal(node, f"{OTHER}, {CLIENT}")
        assert (code, reason[: len(PER_ADDRESS)]) == (1013, PER_ADDRESS)
        async with sse_reader(client, CLIENT) as refused:
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "5"
            error = refused.json()["error"]
            assert error["code"] == "too_many_connections"
            assert error["message"].startswith(PER_ADDRESS)

        readers.append(await ws_reader(node, OTHER))

        await first.ws.close()
        readers.append(await served_again(node, CLIENT))


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(
    stack: Stack, readers: list[Reader]
) -> None:
    """With no trusted proxy (the default), every reader from 127.0.0.1 counts as 127.0.0.1 whatever
    its X-Forwarded-For says: the fourth is refused though it claims another address."""
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT=CAP)
    for _ in range(3):
        readers.append(await ws_reader(node, CLIENT))
    code, reason = await ws_refusal(node, OTHER)
    assert code == 1013
    assert reason.startswith(PER_ADDRESS), reason


async def test_an_ipv6_client_counts_by_its_64_network(stack: Stack, readers: list[Reader]) -> None:
    """Behind a trusted proxy, three readers from three addresses of one IPv6 /64 take that
    client's whole cap; an address of another /64 is still served."""
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT=CAP, FLASHWIRE_TRUSTED_PROXIES="127.0.0.1")
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
        readers.append(await ws_reader(node, host))
    code, reason = await ws_refusal(node, "2001:db8:1:2:abcd::4")
    assert code == 1013
    assert reason.startswith(PER_ADDRESS), reason
    readers.append(await ws_reader(node, "2001:db8:1:3::1"))


def pipeline_and_reset(port: int) -> None:
    """Two pipelined GET /sse, then a TCP reset (SO_LINGER 0) without reading anything."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /sse?editions=en HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_the_count_per_address_is_exact_after_refusals_and_resets(
    stack: Stack, readers: list[Reader]
) -> None:
    """SSE requests reset before their stream starts, and refused readers, give their count back:
    afterwards the address still gets exactly its 3 readers, and the fourth is refused."""
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT=CAP)
    for _ in range(12):
        await asyncio.to_thread(pipeline_and_reset, node.port)
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:

        async def no_reader_left() -> bool:
            return metric((await client.get("/metrics")).text, "flashwire_connections") == 0

        await eventually(no_reader_left, timeout_s=10)
    for _ in range(3):
        readers.append(await ws_reader(node, CLIENT))
    for _ in range(3):
        assert (await ws_refusal(node, CLIENT))[0] == 1013
    await readers.pop().ws.close()
    readers.append(await served_again(node, CLIENT))
    assert (await ws_refusal(node, CLIENT))[0] == 1013
