"""Redis losing data is noticed by running nodes: connected and resuming readers get reset snapshots."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import orjson
import pytest

from flashwire.core.epoch import HISTORY_CHANGED
from tests.conftest import Reader, ServiceNode, Stack, eventually, metric, open_reader, post_line
from tests.test_sse_feeds import SseReader

pytestmark = pytest.mark.slow


async def _lose_data(stack: Stack, how: str) -> None:
    if how == "flushall":
        redis = stack.redis()
        try:
            await redis.flushall()
        finally:
            await redis.aclose()
    else:  # a restart without its data (no persistence, or a wiped volume)
        server = stack.redis_server
        server.kill()
        shutil.rmtree(server.data_dir)
        server.start()


async def _reader_of_posted_lines(
    stack: Stack, readers: list[Reader], count: int
) -> tuple[ServiceNode, str, Reader, list[dict[str, Any]]]:
    """A worker, a node, a reader of `en`, and `count` lines posted: (node, token, reader, its events)."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        for i in range(count):
            await post_line(client, editor, f"line {i}")
    return node, editor, reader, await reader.events(count)


async def _sse(client: httpx.AsyncClient, url: str) -> tuple[SseReader, Any]:
    stream = client.stream("GET", url)
    response = await stream.__aenter__()
    return SseReader(response), stream


async def _direct_writers(node: ServiceNode, expected: float) -> bool:
    """Does the node write to `expected` readers directly (`flashwire_direct_writers`)?"""
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    return metric(text, "flashwire_direct_writers") == expected


@pytest.mark.parametrize("how", ["flushall", "restart-without-data"])
async def test_data_loss_sends_reset_snapshots_to_connected_and_resuming_readers(
    stack: Stack, readers: list[Reader], how: str
) -> None:
    """After FLUSHALL (or a restart without data) both running nodes notice by themselves: their
    connected WebSocket and SSE readers get a reset snapshot without the lost lines on the same
    connection, then new lines live; a reader resuming with a cursor of the lost history gets a reset."""
    stack.worker()
    first, second = stack.service(), stack.service()
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        for i in range(3):
            await post_line(client, editor, f"before the loss {i}")
    ws_reader = await open_reader(first.ws_url, "editions=en")
    readers.append(ws_reader)
    before = await ws_reader.next_of("snapshot")
    while len(before["lines"]) < 3:  # the worker may still be applying: take the events too
        event = await ws_reader.next_of("line")
        before = {**before, "lines": [*before["lines"], event["line"]], "cursor": event["cursor"]}
    old_cursor = before["cursor"]
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as sse_client:
        sse_reader, stream = await _sse(sse_client, "/sse?editions=en")
        try:
            assert (await sse_reader.next_of("snapshot"))["lines"]
            # Caught up, the SSE reader is written to directly (service/sse_wire.py): the reset
            # must bring it back through its outbox.
            await eventually(lambda: _direct_writers(second, 1), timeout_s=10)
            await _lose_data(stack, how)
            for reset in (
                await ws_reader.next_of("snapshot", timeout_s=10),
                await sse_reader.next_of("snapshot"),
            ):
                assert reset["reset"] is True and reset["reason"] == HISTORY_CHANGED
                assert reset["lines"] == [] and reset["edition"] == "en"
            # Everything was lost, tokens included: the newsroom starts again.
            editor = await stack.token("editor", ["en"])
            async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
                await post_line(client, editor, "after the loss")
            for line in (await ws_reader.next_of("line", timeout_s=10), await sse_reader.next_of("line")):
                assert line["line"]["text"] == "after the loss"
            await eventually(lambda: _direct_writers(second, 1), timeout_s=10)  # and direct again
        finally:
            await stream.__aexit__(None, None, None)
    for node in (first, second):
        resumed = await open_reader(node.ws_url, f"editions=en&since={old_cursor}")
        readers.append(resumed)
        snapshot = await resumed.next_of("snapshot")
        assert snapshot["reset"] is True
        assert [line["text"] for line in snapshot["lines"]] == ["after the loss"]
    assert "Traceback" not in first.log() + second.log()


async def test_a_ticker_that_went_back_in_time_resets_readers(stack: Stack, readers: list[Reader]) -> None:
    """A ticker that lost its newest entry while keeping the epoch (a failover to a replica that never got
    it): the node notices its last entry is gone and resets its readers; a cursor naming the lost entry,
    now inside the log's range, gets a reset snapshot instead of a silent resume."""
    node, editor, reader, events = await _reader_of_posted_lines(stack, readers, 3)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        lost = events[-1]["cursor"]
        redis = stack.redis()
        try:
            assert await redis.xdel(stack.keys.ticker("en"), lost) == 1
        finally:
            await redis.aclose()
        reset = await reader.next_of("snapshot", timeout_s=10)
        assert reset["reset"] is True and reset["reason"] == HISTORY_CHANGED
        await post_line(client, editor, "line 3")
        assert (await reader.next_of("line"))["line"]["text"] == "line 3"
        resumed = await open_reader(node.ws_url, f"editions=en&since={lost}")
        readers.append(resumed)
        snapshot = await resumed.next_of("snapshot")
        assert snapshot["reset"] is True
        assert snapshot["reason"] == "cursor is not in the ticker log (its history was lost)"
        # A cursor that is in the log still resumes exactly.
        exact = await open_reader(node.ws_url, f"editions=en&since={events[0]['cursor']}")
        readers.append(exact)
        replayed = await exact.events(2)
        assert [e["line"]["text"] for e in replayed] == ["line 1", "line 3"]
        metrics = (await client.get("/metrics")).text
    assert "flashwire_history_resets_total 1" in metrics


async def test_an_entry_lost_and_overwritten_at_once_is_still_noticed(
    stack: Stack, readers: list[Reader]
) -> None:
    """The newest entry vanishes and a new one is written in the same instant (a failover that lost a write,
    then a new write): the running node does not deliver the new entry as if nothing happened; its reader
    gets a reset snapshot, and the node answers the lost cursor as a freshly started one would."""
    node, _, reader, [_, lost] = await _reader_of_posted_lines(stack, readers, 2)
    redis = stack.redis()
    try:
        line = {
            "id": "en-written-after",
            "version": 1,
            "edition": "en",
            "text": "written after",
            "topics": [],
        }
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xdel(stack.keys.ticker("en"), lost["cursor"])
            pipe.xadd(stack.keys.ticker("en"), {"t": "line", "d": orjson.dumps({"line": line})})
            await pipe.execute()
    finally:
        await redis.aclose()
    first = await reader.next_of("snapshot", "line", timeout_s=10)
    assert first["type"] == "snapshot" and first["reset"] is True and first["reason"] == HISTORY_CHANGED
    for node_under_test in (node, stack.service()):
        resumed = await open_reader(node_under_test.ws_url, f"editions=en&since={lost['cursor']}")
        readers.append(resumed)
        snapshot = await resumed.next_of("snapshot")
        assert snapshot["reason"] == "cursor is not in the ticker log (its history was lost)"
