"""The Python memory an idle /ws reader holds in the serving process (issue 14).

Measured the way bench/connection_memory.py measures it (and with its pieces): the node as
`flashwire serve` runs it (uvicorn with the node's protocol classes, uvloop) in this process with
tracemalloc on, readers in a child process so that their memory is not counted, a warm-up round
that connects and leaves first (lazy imports, caches, coverage's first sight of each line), then
the allocations live with 200 idle readers and not before, per reader.

An idle reader held 21.2 KB before issue 14's work (an asyncio.Queue and asyncio.Event per
connection, the handshake request kept by websockets' parser, the headers...) and 11.7 KB after.
The bound is issue 14's goal, 14 KiB. The test is marked `load`, so it runs without coverage's
tracer, which adds about 2.3 KB per reader (tests/untraced.py). tracemalloc counts the same
allocations from run to run, so only a change that brings back kilobytes per reader fails it.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable

import pytest
import uvicorn
from redis.asyncio import Redis

from bench.connection_memory import Readers, server_config
from flashwire.core.settings import Settings
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess
from flashwire.service.hub import Hub
from tests.conftest import eventually

READERS = 200
WARMUP = 50
# Bytes per idle reader: before issue 14 21.2 KB, after it 11.7 KB; issue 14's goal.
BOUND_B = 14 * 1024


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for `condition()` (conftest's `eventually`, with time for a loaded machine)."""

    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout_s=60)


def _stop(readers: Readers) -> None:
    readers.stop()
    if readers.process.stdout is not None:
        readers.process.stdout.close()


async def _idle_bytes_per_reader(config: uvicorn.Config) -> float:
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await _until(lambda: server.started or serving.done())
    if serving.done():
        serving.result()
    hub: Hub = config.app.app.state.hub
    url = f"ws://127.0.0.1:{config.port}/ws?editions=en"
    try:
        warmup = Readers(url, WARMUP)
        try:
            await warmup.ready()
        finally:
            _stop(warmup)
        await _until(lambda: not server.server_state.connections)
        gc.collect()
        before = tracemalloc.take_snapshot()
        readers = Readers(url, READERS)
        try:
            await readers.ready()
            # Idle: every reader caught up and handed over to direct writes (service/wire.py).
            await _until(lambda: hub.direct_writers == READERS)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            _stop(readers)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 60)
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / READERS


@pytest.mark.slow  # about 15 s: a child process of readers, connected twice
@pytest.mark.load
def test_an_idle_reader_holds_little_python_memory(shared_redis_server: RedisProcess) -> None:
    """200 idle readers hold less than 14 KiB of Python allocations each in the serving process."""
    with asyncio.Runner() as runner:
        redis = Redis.from_url(shared_redis_server.url)
        runner.run(redis.flushall())
        runner.run(redis.aclose())
    env = {
        "REDIS_URL": shared_redis_server.url,
        "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT": str(READERS + 50),
        "FLASHWIRE_MAX_CONNECTIONS": str(READERS + 50),
    }
    config = server_config(Settings.from_env(env), free_port())
    tracemalloc.start()
    try:
        # The event loop `flashwire serve` gets (uvloop), whose transports are what a node holds.
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            per_reader = runner.run(_idle_bytes_per_reader(config))
    finally:
        tracemalloc.stop()
    assert per_reader < BOUND_B, f"{per_reader:,.0f} B per idle reader"
