"""A node whose Redis is down refuses new readers cleanly (1013 / 503) and waits for Redis, never exits."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from flashwire.dev.ports import free_port
from flashwire.service.ws import STORE_UNAVAILABLE
from tests.conftest import Reader, ServiceNode, Stack, open_reader

pytestmark = pytest.mark.slow


async def _refused(node: ServiceNode) -> None:
    """WebSocket: hello, then 1013 before `subscribed`. SSE: 503 with Retry-After and a JSON body."""
    reader = await open_reader(node.ws_url, "editions=en")
    assert await reader.until_closed() == 1013
    assert reader.close_reason == STORE_UNAVAILABLE
    assert [m["type"] for m in reader.messages] == ["hello"]
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        response = await client.get("/sse?editions=en")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == {"status": 503, "code": "unavailable", "message": STORE_UNAVAILABLE}


async def _served(node: ServiceNode, timeout_s: float = 15.0) -> Reader:
    deadline = time.monotonic() + timeout_s
    while True:
        reader = await open_reader(node.ws_url, "editions=en")
        with contextlib.suppress(ConnectionClosed):
            if (await reader.next(timeout_s=5))["type"] == "subscribed":
                assert (await reader.next_of("snapshot"))["edition"] == "en"
                return reader
        await reader.ws.close()
        assert time.monotonic() < deadline, "the node did not serve readers again"
        await asyncio.sleep(0.2)


async def test_readers_are_refused_while_redis_is_down_and_served_when_it_is_back(stack: Stack) -> None:
    """With Redis killed under a running node, every new reader gets hello then 1013 (SSE: 503), each
    refusal is one log line without a traceback; once Redis is back, readers are served again."""
    stack.worker()
    node = stack.service()
    stack.redis_server.kill()
    await asyncio.sleep(0.3)  # the node's ticker reader notices at once (its connection is reset)
    for _ in range(3):
        await _refused(node)
    stack.redis_server.start()
    reader = await _served(node)
    await reader.ws.close()
    log = node.log()
    assert "Traceback" not in log
    assert log.count("reader refused (1013)") >= 3 and log.count("SSE reader refused (503)") >= 3


async def test_a_node_started_while_redis_is_down_waits_for_it(stack: Stack) -> None:
    """`flashwire serve` started with Redis down stays up (it no longer gives up after 30 s), answers
    /healthz 503 and refuses readers; when Redis comes, it serves without a restart."""
    stack.redis_server.kill()
    node = ServiceNode(stack.env, stack.tmp_path / "late-node.log", free_port())
    node.start()
    stack.processes.append(node)
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = await client.get("/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and node.alive(), node.log()
                await asyncio.sleep(0.2)
        assert health.status_code == 503
        await _refused(node)
        await asyncio.sleep(6)
        assert node.alive(), node.log()
        stack.redis_server.start()
        reader = await _served(node)
        await reader.ws.close()
        assert (await client.get("/healthz")).status_code == 200
    assert "Traceback" not in node.log()


async def test_a_redis_that_refuses_writes_does_not_take_nodes_out_of_service(stack: Stack) -> None:
    """Redis refusing writes (here min-replicas-to-write with no replica: NOREPLICAS), even with the epoch
    gone, leaves the node ready: /readyz 200 and new readers served, without a traceback."""
    stack.worker()
    node = stack.service()
    redis = stack.redis()
    try:
        await redis.delete(stack.keys.epoch)
        await redis.config_set("min-replicas-to-write", 1)
        await asyncio.sleep(2.5)  # two history checks and many ticker reads
        async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
            assert (await client.get("/readyz")).status_code == 200
        reader = await _served(node, timeout_s=2)
        await reader.ws.close()
    finally:
        await redis.config_set("min-replicas-to-write", 0)
        await redis.aclose()
    assert "Traceback" not in node.log()
