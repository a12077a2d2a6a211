"""The fast path is in use: a running `flashwire serve` writes to caught-up WebSocket readers directly.

Direct frame writes (service/wire.py) depend on uvicorn's websockets-sansio protocol internals; a
uvicorn upgrade, another `ws=` implementation or a change in the hand-over could turn them off
silently, and the fan-out benchmarks would then measure something else. The node reports the
connections it writes to directly as the gauge `flashwire_direct_writers` on /metrics.
"""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Reader, ServiceNode, Stack, open_reader

READERS = 3


async def _direct_writers(node: ServiceNode) -> float | None:
    """The node's `flashwire_direct_writers` gauge, or None if /metrics has no such gauge."""
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        if family.name == "flashwire_direct_writers":
            return sum(sample.value for sample in family.samples)
    return None


async def _caught_up_readers(node: ServiceNode, readers: list[Reader]) -> None:
    """Open READERS WebSocket readers (of one and of several editions) and wait for their catch-up."""
    for query in ["editions=en", "editions=en,ar", "editions=ar,es&topics=politics"][:READERS]:
        reader = await open_reader(node.ws_url, query)
        readers.append(reader)
        for _ in query.partition("=")[2].partition("&")[0].split(","):
            await reader.next_of("snapshot")


async def _settled_gauge(node: ServiceNode, expected: float, timeout_s: float = 5.0) -> float | None:
    """The gauge once it shows `expected`, or its last value after `timeout_s`."""
    value = await _direct_writers(node)
    async with asyncio.timeout(timeout_s):
        while value != expected:
            await asyncio.sleep(0.05)
            value = await _direct_writers(node)
    return value


async def test_caught_up_websocket_readers_are_written_to_directly(
    stack: Stack, readers: list[Reader]
) -> None:
    """Every caught-up reader of a real `flashwire serve` is on the direct-write path."""
    node = stack.service()
    await _caught_up_readers(node, readers)
    try:
        value = await _settled_gauge(node, READERS)
    except TimeoutError:
        value = await _direct_writers(node)
    assert value == READERS, f"flashwire_direct_writers is {value}, expected {READERS}: the fast path is off"


async def test_the_gauge_shows_a_node_without_direct_writes(stack: Stack, readers: list[Reader]) -> None:
    """With direct writes switched off the same readers are served through ASGI, and the gauge says 0:
    it measures the path, so the test above can fail."""
    node = stack.service(FLASHWIRE_DIRECT_WRITES="0")
    await _caught_up_readers(node, readers)
    await asyncio.sleep(0.3)
    assert await _direct_writers(node) == 0
