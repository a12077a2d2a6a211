"""The push planner: reads the tickers and turns each event worth a push into arq fan-out jobs.

It runs beside the desk consumer in every worker process and reads the ticker streams through
the consumer group "push" (created at the streams' end: a new deployment does not push history),
so each event is planned once however many workers run, and an event whose worker died while
planning it is claimed again (XAUTOCLAIM) after FLASHWIRE_CLAIM_IDLE_MS.

Planning an event (workers/push/alerts.py says which) walks its audience in id order — the
registrations of the edition whose minimum urgency the line reaches, or the targets the line was
pushed to — and enqueues one job per FLASHWIRE_PUSH_BATCH_SIZE targets on the push queue, with a
job id made of the event's cursor and the batch's first and last target. The entry is acknowledged only once
every batch is enqueued. Planning the same event again (after a crash) makes the same job ids:
arq drops an enqueue whose job is still queued, and a batch that already ran skips the targets it
settled (workers/push/batch.py), so no target is sent an alert twice by it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.push_registry import PushRegistry, urgencies_reached
from flashwire.core.settings import Settings
from flashwire.workers.consumer_loop import run_consumer
from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import OutageLog
from flashwire.workers.push.alerts import PlannedAlert, plan_alert

log = logging.getLogger(__name__)

PART = "push planner"
READ_COUNT = 50
READ_BLOCK_MS = 1_000
JOB_NAME = "push_batch"


# SET the latest follow-up (ARGV[1]) unless the one stored has a higher version (ARGV[2]).
_SET_LATEST = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, stored = pcall(cjson.decode, current)
  if ok and tonumber(stored['args']['alert']['version']) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PushPlanner:
    """One consumer of the tickers' "push" group."""

    def __init__(
        self,
        redis: Redis,
        pool: ArqRedis,
        keys: Keys,
        settings: Settings,
        *,
        name: str,
        outages: OutageLog,
        metrics: WorkerMetrics,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._settings = settings
        self._registry = PushRegistry(redis, keys)
        self.name = name
        self._outages = outages
        self._metrics = metrics
        self._streams = {keys.ticker(edition): edition for edition in settings.editions}

    async def ensure_groups(self) -> None:
        """Create the group on every ticker at its end ("$"), where it is missing."""
        for stream in self._streams:
            try:
                await self._redis.xgroup_create(stream, self._keys.push_group, id="$", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _handle(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        edition = self._streams[stream]
        for entry_id, fields in entries:
            cursor = _text(entry_id)
            if fields:  # a claimed entry trimmed meanwhile comes back empty: nothing to plan
                planned = plan_alert(edition, cursor, fields, self._settings)
                if planned is not None:
                    await self.plan(edition, cursor, planned)
            await self._redis.xack(stream, self._keys.push_group, cursor)

    async def plan(self, edition: str, cursor: str, planned: PlannedAlert) -> int:
        """Enqueue the batches of one event; answer how many targets they hold."""
        alert = planned.alert
        if now_ms() > planned.deadline_ms:
            log.info("push of %s v%d not planned: past its deadline", alert.line_id, alert.version)
            return 0
        delivery_id = f"{edition}:{cursor}"
        size = self._settings.push_batch_size
        batch: list[str] = []
        number = total = 0
        args = planned.job_args()
        reach = self._keys.push_reach(alert.line_id)
        prefix = f"{alert.version}:{alert.kind}"

        if planned.audience == "pushed":
            await self._set_latest(delivery_id, planned, args)

        async def flush() -> None:
            nonlocal number, batch
            # Named by its first and last target: planned again after a crash, a batch whose job
            # is still queued under that name holds every target between the two that existed
            # then (a name by number would drop a shifted batch and skip a target).
            await self._pool.enqueue_job(
                JOB_NAME,
                delivery_id,
                args,
                batch,
                _job_id=f"push:{delivery_id}:{batch[0]}:{batch[-1]}",
                _queue_name=self._keys.push_queue,
                _expires=max(1.0, (planned.deadline_ms - now_ms()) / 1000 + 60),
            )
            number += 1
            batch = []

        async for target_id in self._audience(edition, planned):
            batch.append(target_id)
            total += 1
            if len(batch) >= size:
                await flush()
        if batch:
            await flush()
        if total:
            # Nothing is recorded for an alert nobody wanted: the desk shows no push for it.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hsetnx(reach, f"{prefix}:first_ms", planned.accepted_ms)
                pipe.hset(reach, f"{prefix}:targets", total)
                pipe.expire(reach, self._settings.push_ttl_s + 86_400)
                await pipe.execute()
        log.info(
            "push of %s v%d (%s): %d targets in %d batches",
            alert.line_id,
            alert.version,
            alert.kind,
            total,
            number,
        )
        return total

    async def _set_latest(self, delivery_id: str, planned: PlannedAlert, args: dict[str, object]) -> None:
        """Record this correction or withdrawal as the line's latest, unless a newer one is
        (workers/push/batch.py reads it after a batch: the follow-up)."""
        document = orjson.dumps({"delivery_id": delivery_id, "args": args})
        ttl_s = self._settings.push_ttl_s + 3_600
        await self._redis.eval(
            _SET_LATEST,
            1,
            self._keys.push_latest(planned.alert.line_id),
            document,
            planned.alert.version,
            ttl_s,
        )

    async def _audience(self, edition: str, planned: PlannedAlert) -> AsyncIterator[str]:
        """The target ids of an alert, read in pages, each once."""
        page = max(100, self._settings.push_batch_size)
        if planned.audience == "pushed":
            # HSCAN may return an entry twice while the hash grows: remember what was given.
            seen: set[str] = set()
            cursor: int | bytes = 0
            key = self._keys.push_sent(planned.alert.line_id)
            while True:
                cursor, found = await self._redis.hscan(key, cursor, count=page)
                for target_id in map(_text, found):
                    if target_id not in seen:
                        seen.add(target_id)
                        yield target_id
                if not cursor or cursor == b"0":
                    return
        for urgency in urgencies_reached(planned.alert.urgency):
            after = ""
            while True:
                ids = await self._registry.page(edition, urgency, after, page)
                for target_id in ids:
                    yield target_id
                if len(ids) < page:
                    break
                after = ids[-1]

    async def _claim(self) -> None:
        for stream in self._streams:
            result = await self._redis.xautoclaim(
                stream,
                self._keys.push_group,
                self.name,
                min_idle_time=self._settings.claim_idle_ms,
                start_id="0-0",
                count=READ_COUNT,
            )
            entries = result[1] if len(result) > 1 else []
            await self._handle(stream, [(entry_id, fields or {}) for entry_id, fields in entries])

    async def _read(self) -> None:
        response = await self._redis.xreadgroup(
            self._keys.push_group,
            self.name,
            dict.fromkeys(self._streams, ">"),
            count=READ_COUNT,
            block=READ_BLOCK_MS,
        )
        for stream, entries in response or []:
            await self._handle(_text(stream), entries)

    async def run(self) -> None:
        """Plan until cancelled, waiting out Redis outages (workers/consumer_loop.py)."""
        await run_consumer(
            PART,
            prepare=self.ensure_groups,
            claim=self._claim,
            step=self._read,
            claim_every_s=self._settings.claim_idle_ms / 2000,
            outages=self._outages,
            metrics=self._metrics,
        )
