"""A Sentinel failover under load, with nothing acknowledged lost (issue 13, must-show 1).

A primary, a replica and three sentinels (tests/redis_sentinel.py: a primary is down after 1 s);
a worker and two service nodes configured with the sentinels and FLASHWIRE_WAIT_REPLICAS=1;
three posters at 20 posts a second in all, each post with an Idempotency-Key and sent again with
it after a 503 or a lost answer, as the desk does; a WebSocket and an SSE reader on each node,
reconnecting with their cursors (tests/fault_run.py's readers). The primary is SIGKILLed; no
process is restarted by hand; a line embargoed after the failover is released (arq followed
the primary too). Afterwards every accepted post is in the desk index of the new
primary and every reader has every line exactly once, in cursor order. The time from the kill to
the first post accepted again is printed (docs/operations.md "Redis Sentinel").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from tests.conftest import Stack, auth
from tests.delivery_model import ReaderFilter
from tests.fault_run import RunConfig, SseReader, WsReader, _Reader, assert_once_and_in_order, reader_events
from tests.redis_sentinel import Replicated

pytestmark = pytest.mark.slow

KEYS = Keys("fw")
POSTERS = 3
POSTS_PER_S = 20
RUN_S = 9.0
KILL_AT_S = 3.0


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    topology = Replicated(tmp_path / "redis")
    yield topology
    topology.close()


class Poster:
    """Posts a line every POSTERS / POSTS_PER_S seconds, each sent until answered 201 or 202."""

    def __init__(self, name: str, url: str, token: str) -> None:
        self.name, self.url, self.token = name, url, token
        self.accepted: dict[str, int] = {}  # line id -> status (201 or 202)
        self.refusals = 0  # 503s and lost answers, each followed by the same request again

    async def run(self, client: httpx.AsyncClient, until: float, accepted_at: list[float]) -> None:
        number = 0
        while time.monotonic() < until:
            started = time.monotonic()
            number += 1
            key = f"{self.name}-{number}"
            body = {"edition": "en", "text": f"{self.name} line {number}"}
            while True:
                assert time.monotonic() < until + 20, f"{key} not accepted within 20 s of the run's end"
                try:
                    response = await client.post(
                        f"{self.url}/api/v1/lines",
                        json=body,
                        headers={**auth(self.token), "Idempotency-Key": key},
                    )
                except httpx.HTTPError:
                    self.refusals += 1
                    await asyncio.sleep(0.1)
                    continue
                if response.status_code in (201, 202):
                    self.accepted[response.json()["id"]] = response.status_code
                    accepted_at.append(time.monotonic())
                    break
                assert response.status_code == 503, response.text
                self.refusals += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, POSTERS / POSTS_PER_S - (time.monotonic() - started)))


async def test_a_failover_under_load_loses_no_acknowledged_post(
    replicated: Replicated, tmp_path: Path
) -> None:
    """SIGKILL the primary mid-run: every accepted post survives and reaches every reader once, in order."""
    stack = Stack(replicated.primary, tmp_path)  # type: ignore[arg-type]
    env = {**replicated.env(), "FLASHWIRE_WAIT_REPLICAS": "1", "FLASHWIRE_WAIT_TIMEOUT_MS": "200"}
    readers: list[_Reader] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        stack.worker(**env)
        nodes = [stack.service(**env), stack.service(**env)]
        token = await stack.token(role="chief")
        config = RunConfig(seed=13, work_dir=tmp_path, heartbeat_s=5.0, backoff_max_s=0.5)
        rng = random.Random(13)
        async with httpx.AsyncClient(timeout=20) as client:
            for index, node in enumerate(nodes):
                cluster = SimpleNamespace(config=config, pick_port=lambda _rng, port=node.port: port)
                flt = ReaderFilter(("en",))
                readers.append(WsReader(f"ws-{index}", flt, cluster, rng))  # type: ignore[arg-type]
                readers.append(SseReader(f"sse-{index}", flt, cluster, rng, client))  # type: ignore[arg-type]
            tasks = [asyncio.create_task(reader.run()) for reader in readers]
            await asyncio.sleep(1.0)  # connected and given their (empty) snapshots
            posters = [Poster(f"p{i}", nodes[i % 2].url, token) for i in range(POSTERS)]
            accepted_at: list[float] = []
            start = time.monotonic()
            posting = [asyncio.create_task(p.run(client, start + RUN_S, accepted_at)) for p in posters]
            await asyncio.sleep(KILL_AT_S)
            killed_at = time.monotonic()
            replicated.primary.kill()
            await asyncio.gather(*posting)
            again = min(t for t in accepted_at if t > killed_at)
            print(f"\nkill -> first post accepted again: {again - killed_at:.2f} s")
            accepted = {line: status for p in posters for line, status in p.accepted.items()}
            assert len(accepted) > POSTS_PER_S * (RUN_S - 5)  # 20/s, less a few seconds of failover
            assert replicated.master_port() == replicated.replicas[0].port

            new_primary = Redis(port=replicated.replicas[0].port)
            try:
                assert set(accepted) <= {k.decode() for k in await new_primary.hkeys(KEYS.line_index)}
            finally:
                await new_primary.aclose()

            async def delivered() -> bool:
                return all(
                    set(accepted) <= {e["line"]["id"] for e in reader_events(r) if e["type"] == "line"}
                    for r in readers
                )

            # arq followed the primary too: a line embargoed for 1.5 s, posted after the failover, is
            # released by its arq job (or the sweep) on the new primary.
            release_at = datetime.fromtimestamp(time.time() + 1.5, UTC).isoformat()
            embargoed = await client.post(
                f"{nodes[0].url}/api/v1/lines",
                json={"edition": "en", "text": "Released after the failover", "embargo_until": release_at},
                headers=auth(token),
            )
            assert embargoed.status_code in (201, 202), embargoed.text
            accepted[embargoed.json()["id"]] = embargoed.status_code

            deadline = time.monotonic() + 15
            while not await delivered():
                assert time.monotonic() < deadline, "readers did not get every accepted line"
                await asyncio.sleep(0.1)
        for reader in readers:
            assert_once_and_in_order(reader)
        print(
            f"accepted {len(accepted)} posts ({sum(s == 202 for s in accepted.values())} answered 202,"
            f" {sum(p.refusals for p in posters)} answers 503 or lost, each sent again),"
            f" {len(readers)} readers, {sum(len(r.record.connections) for r in readers)} connections"
        )
    finally:
        for reader in readers:
            reader.stopped = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stack.close()
