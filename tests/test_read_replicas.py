"""Service nodes reading the tickers from a replica (issue 13, must-show 4), and the lag it adds.

A primary and one replica (tests/redis_sentinel.py), a worker, node A reading the tickers from the
replica (FLASHWIRE_REDIS_READ_FROM_REPLICAS with FLASHWIRE_REDIS_REPLICA_URL) and node B reading
the primary. Lines are posted while the replica is restarted; A's WebSocket and SSE readers
(tests/fault_run.py's, reconnecting with their cursors) get every line exactly once, in order,
with no reset. Each line's arrival at a reader of A and of B is timed: the difference is the
replica's lag as a reader sees it (printed; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import Reader, Stack, auth, close_promptly, open_reader
from tests.delivery_model import ReaderFilter
from tests.fault_run import RunConfig, SseReader, WsReader, _Reader, assert_once_and_in_order, reader_events
from tests.redis_sentinel import Replicated

pytestmark = pytest.mark.slow

LAG_LINES = 40
RUN_LINES = 60


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Replicated]:
    topology = Replicated(tmp_path / "redis", sentinels=False)
    yield topology
    topology.close()


async def _arrivals(reader: Reader, count: int) -> dict[str, float]:
    """When each of the next `count` lines arrived (monotonic seconds), by line id."""
    arrived: dict[str, float] = {}
    while len(arrived) < count:
        message = await reader.next(timeout_s=10)
        assert not message.get("reset"), f"reset snapshot: {message}"
        if message["type"] == "line":
            arrived[message["line"]["id"]] = time.monotonic()
    return arrived


async def _post(client: httpx.AsyncClient, url: str, token: str, text: str) -> str:
    response = await client.post(
        f"{url}/api/v1/lines", json={"edition": "en", "text": text}, headers=auth(token)
    )
    assert response.status_code == 201, response.text
    line_id: str = response.json()["id"]
    return line_id


async def test_readers_of_a_replica_get_every_line_once_across_its_restart(
    pair: Replicated, tmp_path: Path
) -> None:
    """Node A reads the replica: its readers miss nothing and repeat nothing while the replica restarts."""
    stack = Stack(pair.primary, tmp_path)  # type: ignore[arg-type]
    replica_env = {
        "FLASHWIRE_REDIS_READ_FROM_REPLICAS": "1",
        "FLASHWIRE_REDIS_REPLICA_URL": pair.replicas[0].url,
    }
    readers: list[_Reader] = []
    tasks: list[asyncio.Task[None]] = []
    timed: list[Reader] = []
    try:
        stack.worker()
        on_replica, on_primary = stack.service(**replica_env), stack.service()
        token = await stack.token()
        async with httpx.AsyncClient(timeout=20) as client:
            # -- the lag: the same lines timed at a reader of each node --
            timed = [
                await open_reader(on_replica.ws_url, "editions=en"),
                await open_reader(on_primary.ws_url, "editions=en"),
            ]
            waiting = [asyncio.create_task(_arrivals(r, LAG_LINES)) for r in timed]
            for number in range(LAG_LINES):
                await _post(client, on_primary.url, token, f"Timed line {number}")
                await asyncio.sleep(0.05)
            via_replica, via_primary = await asyncio.gather(*waiting)
            lag_ms = sorted((via_replica[i] - via_primary[i]) * 1000 for i in via_primary)
            median, p90 = statistics.median(lag_ms), lag_ms[int(0.9 * len(lag_ms))]
            print(
                f"\nreplica lag, {LAG_LINES} lines: median {median:.1f} ms, p90 {p90:.1f} ms,",
                end="",
            )
            print(f" max {lag_ms[-1]:.1f} ms")

            # -- the restart: readers of the replica-reading node, lines posted throughout --
            config = RunConfig(seed=4, work_dir=tmp_path, heartbeat_s=5.0, backoff_max_s=0.5)
            cluster = SimpleNamespace(config=config, pick_port=lambda _rng: on_replica.port)
            rng = random.Random(4)
            flt = ReaderFilter(("en",))
            readers = [WsReader("ws", flt, cluster, rng), SseReader("sse", flt, cluster, rng, client)]  # type: ignore[arg-type]
            tasks = [asyncio.create_task(reader.run()) for reader in readers]
            await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), 10)
            posted: list[str] = []
            for number in range(RUN_LINES):
                if number == RUN_LINES // 3:
                    pair.replicas[0].kill()
                if number == RUN_LINES // 2:
                    pair.replicas[0].start()
                posted.append(await _post(client, on_primary.url, token, f"Line {number} across the restart"))
                await asyncio.sleep(0.05)

            async def delivered() -> bool:
                return all(
                    set(posted) <= {e["line"]["id"] for e in reader_events(r) if e["type"] == "line"}
                    for r in readers
                )

            deadline = time.monotonic() + 20
            while not await delivered():
                assert time.monotonic() < deadline, "readers of the replica did not get every line"
                await asyncio.sleep(0.1)
        for reader in readers:
            assert_once_and_in_order(reader, posted)
        connections = sum(len(r.record.connections) for r in readers)
        print(f"{len(posted)} lines across the restart, {connections} connections")
        # Node A did read the restarted replica: its XREADs are counted there.
        stats = pair.replicas[0].command("INFO", "commandstats").decode()
        assert "cmdstat_xread:calls=" in stats, "node A does not read the replica"
    finally:
        for reader in readers:
            reader.stopped = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_promptly(timed)
        stack.close()
