"""The fast path is in use: a running `flashwire serve` writes to caught-up WebSocket readers directly.

Direct frame writes (service/wire.py) depend on uvicorn's websockets-sansio protocol internals; a
uvicorn upgrade, another `ws=` implementation or a change in the hand-over could turn them off
silently, and the fan-out benchmarks would then measure something else. The node reports the
connections it writes to directly as the gauge `flashwire_direct_writers` on /metrics, and the
event frames it actually wrote that way as the counter `flashwire_direct_frames_total`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flashwire.core.cursors import cursor_key
from tests.conftest import Reader, ServiceNode, Stack, open_reader, post_line
from tests.test_sse_feeds import SseReader

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


async def _sse_messages(sse: SseReader, count: int) -> list[tuple[str | None, dict[str, Any]]]:
    """The next `count` line events of `sse`, each with its event id."""
    got = []
    for _ in range(count):
        event = await sse.next_of("line", "snapshot")
        got.append((sse.last_id, event))
    return got


async def test_caught_up_sse_readers_are_written_to_directly_and_resume_exactly(stack: Stack) -> None:
    """Caught-up SSE readers (of one and of two editions) are on the direct-write path too
    (service/sse_wire.py): the lines posted reach each once, in order, each with the reader's
    complete cursor set as its id, and a reader that reconnects with the last id it got is sent
    exactly what it missed."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "ar"])
    posts = [("en", "first en"), ("ar", "أول"), ("en", "second en"), ("ar", "ثان"), ("en", "third en")]
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        async with (
            client.stream("GET", "/sse", params={"editions": "en"}) as one,
            client.stream("GET", "/sse", params={"editions": "en,ar"}) as two,
        ):
            readers = {"en": SseReader(one), "en,ar": SseReader(two)}
            for query, sse in readers.items():
                for _ in query.split(","):
                    await sse.next_of("snapshot")
            assert await _settled_gauge(node, 2) == 2, "the SSE readers are not written to directly"
            before = await _metric(node, "flashwire_direct_frames")
            posted = [await post_line(client, editor, text, edition=edition) for edition, text in posts]
            for query, sse in readers.items():
                expected = [p for p in posted if p["edition"] in query.split(",")]
                got = await _sse_messages(sse, len(expected))
                assert [event["line"]["id"] for _, event in got] == [p["id"] for p in expected]
                cursors: dict[str, str] = {}
                for event_id, event in got:
                    assert event_id is not None
                    ids = dict(part.split(":", 1) for part in event_id.split(","))
                    assert sorted(ids) == sorted(query.split(","))
                    assert ids[event["edition"]] == event["cursor"]
                    for edition, cursor in cursors.items():  # no edition goes back
                        assert cursor_key(ids[edition]) >= cursor_key(cursor)
                    cursors = ids
            after = await _metric(node, "flashwire_direct_frames")
            assert before is not None and after is not None
            assert after - before >= 3 + 5, "the lines did not go through the direct writes"
            last_id = readers["en,ar"].last_id
        editions = ["en", "ar", "en", "ar"]
        missed = [await post_line(client, editor, f"missed {i}", edition=e) for i, e in enumerate(editions)]
        async with client.stream(
            "GET", "/sse", params={"editions": "en,ar"}, headers={"Last-Event-ID": str(last_id)}
        ) as again:
            sse = SseReader(again)
            await sse.next_of("subscribed")
            got = await _sse_messages(sse, len(missed))
            assert [event["type"] for _, event in got] == ["line"] * len(missed)
            for edition in ("en", "ar"):  # in order per edition (a replay goes edition by edition)
                assert [e["line"]["id"] for _, e in got if e["edition"] == edition] == [
                    m["id"] for m in missed if m["edition"] == edition
                ]
            posted_live = await post_line(client, editor, "live again", edition="ar")
            [(_, event)] = await _sse_messages(sse, 1)
            assert event["line"]["id"] == posted_live["id"]
