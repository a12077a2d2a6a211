"""Reach: how many connected readers got each line, and how long delivery took, across all nodes.

Every node counts, per line version, the frames it actually wrote to reader
sockets and the latest time one was written, and adds its figures to a Redis
hash a few times a second. The desk sums the counts over nodes and takes the
slowest node's time: "reached 9,874 readers in 84 ms".

The same writes feed this node's latency histograms (service/metrics.py, `DeliveryLatency`):
the first frame of an event written here times it.

Only readers count: the desk's own ticker connection (`role=desk`, docs/protocol.md 2.4) is
written to like any reader but counted in neither reach nor the readers online.

Readers online now: every node rewrites, every READERS_PUBLISH_S, one hash of its per-edition
reader counts (the hub keeps them as readers register and leave, so this is one write a second
whatever the number of readers) with a TTL of READERS_TTL_S; a node that dies stops refreshing
it and drops out of the sum within the TTL. `read_online` sums the hashes still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.models import Reach
from flashwire.core.tasks import cancel_until_done
from flashwire.service.events import Event

if TYPE_CHECKING:
    from flashwire.service.hub import Hub
    from flashwire.service.metrics import DeliveryLatency

log = logging.getLogger(__name__)

REACH_KEEP_S = 30 * 24 * 3600
# Seconds a publishing task gets to end when the node stops.
STOP_TIMEOUT_S = 2.0
# Each node rewrites its reader counts this often, and they expire this long after the last write:
# three missed writes in a row mean the node is gone.
READERS_PUBLISH_S = 1.0
READERS_TTL_MS = 3_000
# A node unseen this long is dropped from the list of nodes (Keys.readers_nodes).
READERS_FORGET_NODE_MS = 3_600_000

_FLUSH = """
for i = 1, #KEYS do
  local base = (i - 1) * 4
  local count_field, ms_field = ARGV[base + 1], ARGV[base + 3]
  redis.call('HINCRBY', KEYS[i], count_field, ARGV[base + 2])
  local known = tonumber(redis.call('HGET', KEYS[i], ms_field) or '-1')
  if tonumber(ARGV[base + 4]) > known then redis.call('HSET', KEYS[i], ms_field, ARGV[base + 4]) end
  redis.call('EXPIRE', KEYS[i], ARGV[#ARGV])
end
return #KEYS
"""


class ReachRecorder:
    """This node's delivery counts, flushed to Redis periodically."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        node: str,
        *,
        flush_interval_s: float = 0.2,
        latency: DeliveryLatency | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._node = node
        self._interval_s = flush_interval_s
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._script = redis.register_script(_FLUSH)
        self._task: asyncio.Task[None] | None = None
        self._latency = latency

    def delivered(self, event: Event, sent_ms: int, *, live: bool = True, count: int = 1) -> None:
        """Count frames of `event` written to readers; `live` deliveries also time it.

        The hub calls this once per event per dispatch round for the readers it wrote to directly
        (`count` of them); a reader's own sender calls it per frame it wrote.
        """
        key = event.reach_key
        if key is None:
            return
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = [0, -1]
        entry[0] += count
        if live:
            latency = sent_ms - event.accepted_ms
            if latency > entry[1]:
                entry[1] = latency
            if self._latency is not None:
                self._latency.first_write(event, sent_ms)

    def start(self) -> None:
        """Begin flushing in the background."""
        self._task = asyncio.create_task(self._run(), name="reach-flush")

    async def stop(self) -> None:
        """Stop, flushing what is left."""
        if self._task is not None:
            await cancel_until_done([self._task], timeout_s=STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("reach: could not flush (%s); keeping counts for the next try", exc)

    async def flush(self) -> None:
        """Add the counts gathered since the last flush to Redis."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        # One script call per line: a line's reach hash is its own key, untagged, so a Redis
        # Cluster spreads lines over its shards; one call over several lines would be refused
        # there (CROSSSLOT). A failed call keeps its counts, and those not sent yet, for next time.
        by_line: dict[str, list[tuple[tuple[str, int], list[int]]]] = {}
        for key, counts in pending.items():
            by_line.setdefault(key[0], []).append((key, counts))
        groups = list(by_line.items())
        for done, (line_id, entries) in enumerate(groups):
            args: list[str | int] = []
            for (_, version), (count, latency_ms) in entries:
                args += [f"{version}:{self._node}:n", count, f"{version}:{self._node}:ms", latency_ms]
            args.append(REACH_KEEP_S)
            try:
                await self._script(keys=[self._keys.reach(line_id)] * len(entries), args=args)
            except Exception:
                for _, unsent in groups[done:]:
                    for key, (count, latency_ms) in unsent:
                        entry = self._pending.setdefault(key, [0, -1])
                        entry[0] += count
                        entry[1] = max(entry[1], latency_ms)
                raise


def parse_reach(raw: dict[bytes, bytes]) -> dict[int, Reach]:
    """Per-version totals over all nodes from a reach hash (fields '<version>:<node>:n' and ':ms')."""
    counts: dict[int, int] = {}
    slowest: dict[int, int] = {}
    nodes: dict[int, set[str]] = {}
    for field, value in raw.items():
        version_text, _, rest = field.decode().partition(":")
        node, _, kind = rest.rpartition(":")
        version = int(version_text)
        nodes.setdefault(version, set()).add(node)
        if kind == "n":
            counts[version] = counts.get(version, 0) + int(value)
        elif kind == "ms":
            slowest[version] = max(slowest.get(version, -1), int(value))
    return {
        version: Reach(
            readers=counts.get(version, 0),
            ms=slowest[version] if slowest.get(version, -1) >= 0 else None,
            nodes=len(nodes[version]),
        )
        for version in nodes
    }


async def read_reach(redis: Redis, keys: Keys, line_ids: list[str]) -> list[dict[int, Reach]]:
    """Reach per version of several lines, in one round trip."""
    if not line_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for line_id in line_ids:
            pipe.hgetall(keys.reach(line_id))
        results = await pipe.execute()
    return [parse_reach(raw) for raw in results]


class OnlineReaders:
    """Publishes this node's per-edition reader counts (`Hub.readers`: WebSocket and SSE, desks
    excluded) to Redis every `publish_s`, expiring `ttl_ms` after the last write."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        node: str,
        hub: Hub,
        *,
        publish_s: float = READERS_PUBLISH_S,
        ttl_ms: int = READERS_TTL_MS,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._node = node
        self._hub = hub
        self._publish_s = publish_s
        self._ttl_ms = ttl_ms
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin publishing in the background."""
        self._task = asyncio.create_task(self._run(), name="readers-online")

    async def stop(self) -> None:
        """Stop publishing and withdraw this node's counts at once (a clean shutdown need not wait
        out the TTL)."""
        if self._task is not None:
            await cancel_until_done([self._task], timeout_s=STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._keys.readers(self._node))
                pipe.zrem(self._keys.readers_nodes, self._node)
                await pipe.execute()

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:
                log.warning("readers online: could not publish (%s); trying again", exc)
            await asyncio.sleep(self._publish_s)

    async def publish(self) -> None:
        """Write this node's counts now: one hash (every edition, zeros included), its TTL, and the
        node's entry in the list of nodes."""
        key, now = self._keys.readers(self._node), now_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=dict(self._hub.readers))
            pipe.pexpire(key, self._ttl_ms)
            pipe.zadd(self._keys.readers_nodes, {self._node: now})
            pipe.zremrangebyscore(self._keys.readers_nodes, "-inf", now - READERS_FORGET_NODE_MS)
            await pipe.execute()


async def read_online(redis: Redis, keys: Keys, edition: str) -> tuple[int, int]:
    """Readers of `edition` connected now over every live node, and how many nodes publish counts.

    A reader subscribed to several editions counts once in each. A node's counts are at most
    READERS_PUBLISH_S old, and a dead node's vanish READERS_TTL_MS after its last write (Redis
    expires them: no node's clock is trusted for this).
    """
    nodes = await redis.zrange(keys.readers_nodes, 0, -1)
    if not nodes:
        return 0, 0
    async with redis.pipeline(transaction=False) as pipe:
        for node in nodes:
            pipe.hget(keys.readers(node.decode()), edition)
        counts = await pipe.execute()
    present = [int(count) for count in counts if count is not None]
    return sum(present), len(present)
