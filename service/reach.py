"""Reach: how many connected readers got each line, and how long delivery took, across all nodes.

Every node counts, per line version, the frames it actually wrote to reader
sockets and the latest time one was written, and adds its figures to a Redis
hash a few times a second. The desk sums the counts over nodes and takes the
slowest node's time: "reached 9,874 readers in 84 ms".

The same writes feed this node's latency histograms (service/metrics.py, `DeliveryLatency`):
the first frame of an event written here times it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.models import Reach
from flashwire.service.events import Event

if TYPE_CHECKING:
    from flashwire.service.metrics import DeliveryLatency

log = logging.getLogger(__name__)

REACH_KEEP_S = 30 * 24 * 3600

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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        keys: list[str] = []
        args: list[str | int] = []
        for (line_id, version), (count, latency_ms) in pending.items():
            keys.append(self._keys.reach(line_id))
            args += [f"{version}:{self._node}:n", count, f"{version}:{self._node}:ms", latency_ms]
        args.append(REACH_KEEP_S)
        try:
            await self._script(keys=keys, args=args)
        except Exception:
            for key, (count, latency_ms) in pending.items():
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
