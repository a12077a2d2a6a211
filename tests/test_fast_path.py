"""The fast path is in use: a running `flashwire serve` writes to caught-up WebSocket readers directly.

Direct frame writes (service/wire.py) depend on uvicorn's websockets-sansio protocol internals; a
uvicorn upgrade, another `ws=` implementation or a change in the hand-over could turn them off
silently, and the fan-out benchmarks would then measure something else. The node reports the
connections it writes to directly as the gauge `flashwire_direct_writers` on /metrics, and the
event frames it actually wrote that way as the counter `flashwire_direct_frames_total`.
"""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Reader, ServiceNode, Stack, open_reader, post_line

READERS = 3
# One line per edition, both on politics: the readers of _caught_up_readers get 1, 2 and 1 of them.
LINES = {"en": "Parliament votes to dissolve itself", "ar": "البرلمان يصوت على حل نفسه"}
FRAMES = 4


async def _metric(node: ServiceNode, name: str) -> float | None:
    """The value of the node's metric family `name` (a counter without `_total`), or None if
    /metrics has no such family."""
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        if family.name == name:
            return sum(sample.value for sample in family.samples)
    return None


async def _direct_writers(node: ServiceNode) -> float | None:
    """The node's `flashwire_direct_writers` gauge, or None if /metrics has no such gauge."""
    return await _metric(node, "flashwire_direct_writers")


async def _frames_after_posting(stack: Stack, node: ServiceNode, readers: list[Reader]) -> float | None:
    """How much `flashwire_direct_frames_total` grew while LINES reached the readers (None: no such
    counter). Each reader has received its lines when this returns, so every write is counted."""
    token = await stack.token("editor", list(LINES))
    before = await _metric(node, "flashwire_direct_frames")
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        for edition, text in LINES.items():
            await post_line(client, token, text, edition=edition, topics=["politics"])
    for reader, count in zip(readers, (1, 2, 1), strict=True):
        for _ in range(count):
            await reader.next_of("line", timeout_s=10)
    after = await _metric(node, "flashwire_direct_frames")
    return None if before is None or after is None else after - before


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
    """Every caught-up reader of a real `flashwire serve` is on the direct-write path, and the lines
    posted then reach them through it: the counter of direct frames grows by one per frame, at least
    one per reader."""
    stack.worker()
    node = stack.service()
    await _caught_up_readers(node, readers)
    try:
        value = await _settled_gauge(node, READERS)
    except TimeoutError:
        value = await _direct_writers(node)
    assert value == READERS, f"flashwire_direct_writers is {value}, expected {READERS}: the fast path is off"
    grown = await _frames_after_posting(stack, node, readers)
    assert grown is not None, "/metrics has no flashwire_direct_frames_total"
    assert grown >= max(FRAMES, READERS), f"flashwire_direct_frames_total grew by {grown}, not {FRAMES}"


async def test_the_gauge_shows_a_node_without_direct_writes(stack: Stack, readers: list[Reader]) -> None:
    """With direct writes switched off the same readers are served through ASGI, and the gauge and the
    counter of direct frames both stay at 0 while lines reach them: they measure the path, so the test
    above can fail."""
    stack.worker()
    node = stack.service(FLASHWIRE_DIRECT_WRITES="0")
    await _caught_up_readers(node, readers)
    await asyncio.sleep(0.3)
    assert await _direct_writers(node) == 0
    assert await _frames_after_posting(stack, node, readers) == 0
