"""One push fan-out batch: up to FLASHWIRE_PUSH_BATCH_SIZE targets of one alert, sent concurrently.

An arq job (`push_batch`, on the push queue) runs it. For each target it:

1. skips it if this fan-out already settled it (`fw:push:done:<delivery>`: a batch run again
   after a retry, a crash or a second planning sends nothing twice), or if its registration is
   gone or no longer wants the line (editions, topics, minimum urgency changed since planning);
2. for a new line only: skips it during its quiet hours, and past FLASHWIRE_PUSH_HOURLY_CAP
   alerts this hour (reserved before the send, given back unless accepted: a retried send is
   not counted twice, and the batches of a burst of lines count each other);
3. sends it, at most FLASHWIRE_PUSH_CONCURRENCY sends in flight per worker process, and records
   the outcome as the answers come (written every RECORD_EVERY answers or RECORD_AFTER_S, so a
   worker killed mid-batch repeats at most the sends of that moment — and a repeated alert has
   the same collapse id, so the platform replaces it rather than show it twice);
4. accepted: the target joins the line's `fw:push:sent` (it gets the correction or withdrawal);
   gone: its registration is removed; retry: the batch is retried with arq's `Retry` after the
   push service's Retry-After (or exponential backoff), until the alert's deadline; failed: kept.

The line may change while its batches wait or run. Before sending, a batch reads the line as it
is now: a line killed meanwhile is not sent at all (`superseded`), a line corrected meanwhile is
sent as corrected. After recording what was accepted, it reads the line's latest planned
correction or withdrawal (`fw:push:latest:<line id>`, set by the planner before it reads who was
pushed): if one is newer than what this batch sent, the targets this batch reached get it too, as
a follow-up job. The planner reads `fw:push:sent` after setting `latest`, and a batch records its
acceptances before reading `latest`, so every target reached gets the newest version one way or
the other (and a target reached both ways gets it twice under the same collapse id: the platform
keeps one). A Redis error during a batch makes arq run it again later (../shared/PITFALLS.md 2.7).

The outcomes are counted per line version in `fw:push:reach:<line id>` for the desk, and in the
worker's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from arq import Retry
from arq.connections import ArqRedis
from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.push_models import QuietHours
from flashwire.core.push_registry import PushRegistry
from flashwire.core.settings import Settings
from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import REDIS_DOWN
from flashwire.workers.push.alerts import PlannedAlert, planned_for_line
from flashwire.workers.push.base import Outcome, PushSender, Target

log = logging.getLogger(__name__)

RECORD_EVERY = 100
RECORD_AFTER_S = 0.05
# Tries of one batch (arq's job_try): the first and up to five retries of what was not settled.
MAX_TRIES = 6
RETRY_BASE_S = 2.0
RETRY_MAX_S = 120.0
CAP_WINDOW_S = 3_600
DONE_TTL_S = 2 * 86_400
JOB_NAME = "push_batch"
# The sender's outcome detail for keys or an endpoint no push service takes (workers/push/webpush.py).
BAD_SUBSCRIPTION = "bad-subscription"


def backoff_s(job_try: int, retry_after_s: float | None) -> float:
    """The wait before a batch's next try: the push service's Retry-After if it gave one (at least
    that long), else 2, 4, 8 ... s, at most RETRY_MAX_S."""
    own = min(RETRY_MAX_S, RETRY_BASE_S * 2.0 ** max(0, job_try - 1))
    return max(own, retry_after_s) if retry_after_s is not None else own


def wants(record: dict[str, Any], planned: PlannedAlert, edition: str) -> bool:
    """Does this registration still want this alert? (Its choices may have changed since planning.)"""
    if planned.audience == "pushed":
        return True  # it was sent the line: it gets the correction or the withdrawal, whatever it chose since
    if edition not in record["editions"]:
        return False
    if URGENCY_RANK.get(planned.alert.urgency, 2) > URGENCY_RANK.get(record["urgency"], 0):
        return False
    topics = record["topics"]
    return not topics or not set(topics).isdisjoint(planned.topics)


def in_quiet_hours(record: dict[str, Any], at: datetime) -> bool:
    """Is `at` inside the registration's quiet hours, in its own time zone?"""
    quiet = record.get("quiet_hours")
    if not quiet:
        return False
    window = QuietHours(**quiet)
    local = at.astimezone(ZoneInfo(window.time_zone))
    return window.contains(local.hour, local.minute)


def target_of(record: dict[str, Any]) -> Target:
    return Target(
        id=record["id"],
        platform=record["platform"],
        token=record["token"],
        p256dh=record.get("p256dh", ""),
        auth=record.get("auth", ""),
        environment=record.get("environment", "production"),
        registered_at_ms=int(record["registered_at_ms"]),
        language=record.get("language", "en"),
    )


@dataclass
class _Recorder:
    """Writes outcomes to Redis in small groups as they come (see the module's point 3)."""

    redis: Redis
    keys: Keys
    delivery_id: str
    planned: PlannedAlert
    sent_ttl_s: int
    pending: list[tuple[str, Outcome]] = field(default_factory=list)
    last_write: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    # The targets whose push service accepted the alert in this run (for the follow-up).
    reached: list[str] = field(default_factory=list)

    async def add(self, target_id: str, outcome: Outcome) -> None:
        self.pending.append((target_id, outcome))
        if len(self.pending) >= RECORD_EVERY or time.monotonic() - self.last_write >= RECORD_AFTER_S:
            await self.flush()

    async def settle(self, target_ids: list[str], status: str) -> None:
        """Record targets settled without a send (capped, quiet, expired)."""
        for target_id in target_ids:
            self.pending.append((target_id, Outcome(status="failed", detail=status)))
        await self.flush()

    async def flush(self) -> None:
        entries, self.pending = self.pending, []
        self.last_write = time.monotonic()
        if not entries:
            return
        alert = self.planned.alert
        done = self.keys.push_done(self.delivery_id)
        reach = self.keys.push_reach(alert.line_id)
        prefix = f"{alert.version}:{alert.kind}"
        sent = self.keys.push_sent(alert.line_id)
        settled: dict[str, str] = {}
        accepted: dict[str, int] = {}
        counts: Counter[str] = Counter()
        for target_id, outcome in entries:
            name = (
                outcome.detail if outcome.status == "failed" and outcome.detail in SKIPS else outcome.status
            )
            settled[target_id] = name
            counts[name] += 1
            if outcome.status == "accepted":
                accepted[target_id] = alert.version
                self.reached.append(target_id)
        self.counts.update(counts)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(done, mapping=settled)
            pipe.expire(done, DONE_TTL_S)
            if accepted and alert.kind != "withdrawal":
                pipe.hset(sent, mapping=accepted)
                pipe.expire(sent, self.sent_ttl_s)
            for name, count in counts.items():
                pipe.hincrby(reach, f"{prefix}:{name}", count)
            await pipe.execute()


# Targets settled without a send, recorded under these names instead of "failed".
SKIPS = frozenset({"capped", "quiet", "expired", "superseded"})


class PushRun:
    """What the push jobs of one worker process share: Redis, the senders, the send limit."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        senders: dict[str, PushSender],
        metrics: WorkerMetrics,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.senders = senders
        self.metrics = metrics
        self.registry = PushRegistry(redis, keys)
        self.in_flight = asyncio.Semaphore(settings.push_concurrency)

    async def _reserve(self, ids: list[str], hour: int) -> set[str]:
        """Take one of this hour's FLASHWIRE_PUSH_HOURLY_CAP new-line alerts for each id (INCR,
        pipelined, so concurrent batches of a burst of lines count each other); answer the ids
        already at the cap (their reservation is given back at once)."""
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for target_id in ids:
                pipe.incr(self.keys.push_cap(target_id, hour))
                pipe.expire(self.keys.push_cap(target_id, hour), CAP_WINDOW_S + 60)
            counts = (await pipe.execute())[::2]
        capped = {t for t, n in zip(ids, counts, strict=True) if int(n) > self.settings.push_hourly_cap}
        await self._release(sorted(capped), hour)
        return capped

    async def _release(self, ids: list[str], hour: int) -> None:
        """Give back reservations of alerts not accepted (a retry reserves again: a try that failed
        does not count against the target)."""
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for target_id in ids:
                    pipe.decr(self.keys.push_cap(target_id, hour))
                await pipe.execute()

    async def _current(self, planned: PlannedAlert) -> PlannedAlert | None:
        """The alert as the line is now: None if it was killed or has expired since it was planned
        (a new line or a correction is not worth sending then), the newer version if corrected."""
        if planned.alert.kind == "withdrawal":
            return planned
        raw = await self.redis.get(self.keys.line(planned.alert.line_id))
        if raw is None:
            return planned
        line = orjson.loads(raw)
        if line.get("status") == "canceled" or line.get("expired"):
            return None
        if int(line.get("version", 0)) <= planned.alert.version:
            return planned
        newer = planned_for_line(
            planned.alert.edition,
            planned.alert.cursor,
            line,
            planned.alert.kind,
            "",
            self.settings,
            planned.audience,
        )
        return replace(newer, accepted_ms=planned.accepted_ms, deadline_ms=planned.deadline_ms)

    async def _follow_up(self, pool: ArqRedis | None, planned: PlannedAlert, reached: list[str]) -> None:
        """Send the line's latest correction or withdrawal, if newer than what was just sent, to the
        targets this batch reached (see the module docstring)."""
        if pool is None or not reached or planned.alert.kind == "withdrawal":
            return
        raw = await self.redis.get(self.keys.push_latest(planned.alert.line_id))
        if raw is None:
            return
        latest = orjson.loads(raw)
        kind, version = latest["args"]["alert"]["kind"], int(latest["args"]["alert"]["version"])
        if kind != "withdrawal" and version <= planned.alert.version:
            return
        ordered = sorted(reached)
        await pool.enqueue_job(
            JOB_NAME,
            latest["delivery_id"],
            latest["args"],
            ordered,
            _job_id=f"push:{latest['delivery_id']}:after:{ordered[0]}:{ordered[-1]}",
            _queue_name=self.keys.push_queue,
        )

    async def _send(self, sender: PushSender, target: Target, planned: PlannedAlert) -> Outcome:
        async with self.in_flight:
            started = time.monotonic()
            try:
                # The sender has its own timeout; this one is the backstop for a sender that hangs.
                outcome = await asyncio.wait_for(
                    sender.send(target, planned.alert), self.settings.push_timeout_s * 2 + 1
                )
            except TimeoutError:
                outcome = Outcome(status="retry", detail="timeout")
            except Exception:
                log.exception("push sender %s failed on %s", sender.platform, target.id)
                outcome = Outcome(status="retry", detail="sender error")
            self.metrics.push_send_seconds.labels(sender.platform).observe(time.monotonic() - started)
            self.metrics.push_sends.labels(sender.platform, outcome.status).inc()
            return outcome

    async def batch(
        self,
        delivery_id: str,
        planned: PlannedAlert,
        target_ids: list[str],
        *,
        job_try: int,
        pool: ArqRedis | None = None,
    ) -> dict[str, int]:
        """Run one batch; answer its counts by outcome. Raises arq's Retry while targets are left
        to retry and the deadline allows. `pool` enqueues the follow-up (module docstring)."""
        edition = planned.alert.edition
        recorder = _Recorder(
            self.redis, self.keys, delivery_id, planned, sent_ttl_s=self.settings.push_ttl_s + 3_600
        )
        done = await self.redis.hmget(self.keys.push_done(delivery_id), target_ids)
        pending = [t for t, settled in zip(target_ids, done, strict=True) if settled is None]
        if now_ms() > planned.deadline_ms:
            await recorder.settle(pending, "expired")
            self._count_skips(recorder)
            return dict(recorder.counts)
        current = await self._current(planned)
        if current is None:
            await recorder.settle(pending, "superseded")
            self._count_skips(recorder)
            return dict(recorder.counts)
        planned = recorder.planned = current
        records = await self.registry.load(pending)
        if planned.audience == "subscribers":
            await self.registry.forget_missing(
                edition, [t for t, r in zip(pending, records, strict=True) if r is None]
            )
        at = datetime.now(UTC)
        live = [
            r
            for r in records
            if r is not None and wants(r, planned, edition) and r["platform"] in self.senders
        ]
        hour = int(at.timestamp() // CAP_WINDOW_S)
        not_accepted: list[str] = []
        if planned.alert.kind == "line":
            quiet = [r["id"] for r in live if in_quiet_hours(r, at)]
            live = [r for r in live if r["id"] not in set(quiet)]
            capped = await self._reserve([r["id"] for r in live], hour)
            live = [r for r in live if r["id"] not in capped]
            await recorder.settle(quiet, "quiet")
            await recorder.settle(sorted(capped), "capped")
        retry_after: list[float | None] = []
        removed: Counter[str] = Counter()

        async def one(record: dict[str, Any]) -> None:
            target = target_of(record)
            outcome = await self._send(self.senders[target.platform], target, planned)
            if outcome.status != "accepted":
                not_accepted.append(target.id)
            if outcome.status == "retry":
                retry_after.append(outcome.retry_after_s)
                return
            if outcome.status == "failed" and outcome.detail == BAD_SUBSCRIPTION:
                # Keys or an endpoint no push service will ever take: as good as gone.
                outcome = Outcome(status="gone", detail=outcome.detail)
            if outcome.status == "gone":
                if await self.registry.remove(target.id, registered_before_ms=target.registered_at_ms):
                    removed[target.platform] += 1
                    self.metrics.push_targets_removed.labels(target.platform).inc()
            elif outcome.status == "failed":
                log.info("push to %s %s failed: %s", target.platform, target.id, outcome.detail)
            await recorder.add(target.id, outcome)

        results = await asyncio.gather(*(one(record) for record in live), return_exceptions=True)
        await recorder.flush()
        if planned.alert.kind == "line":
            await self._release(not_accepted, hour)
        await self._follow_up(pool, planned, recorder.reached)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # a Redis error (push_batch retries the batch) or a bug
        self._count_skips(recorder)
        finished = now_ms()
        self.metrics.push_fanout_seconds.observe(max(0, finished - planned.accepted_ms) / 1000)
        await self._finished(planned, finished)
        if retry_after:
            hinted = [r for r in retry_after if r is not None]
            delay = backoff_s(job_try, max(hinted) if hinted else None)
            if job_try < MAX_TRIES and now_ms() + delay * 1000 < planned.deadline_ms:
                log.info("push batch %s: %d targets to retry in %.1f s", delivery_id, len(retry_after), delay)
                raise Retry(defer=delay)
            # Out of tries, or the next try would come after the deadline: these are failed now.
            recorder.counts["failed"] += len(retry_after)
            prefix = f"{planned.alert.version}:{planned.alert.kind}"
            await self.redis.hincrby(
                self.keys.push_reach(planned.alert.line_id), f"{prefix}:failed", len(retry_after)
            )
        return dict(recorder.counts)

    def _count_skips(self, recorder: _Recorder) -> None:
        for name in SKIPS:
            if recorder.counts.get(name):
                self.metrics.push_sends.labels("none", name).inc(recorder.counts[name])

    async def _finished(self, planned: PlannedAlert, at_ms: int) -> None:
        """Keep the latest end of the fan-out (ms) per line version and kind, for the desk."""
        key = self.keys.push_reach(planned.alert.line_id)
        name = f"{planned.alert.version}:{planned.alert.kind}:last_ms"
        await self.redis.eval(_MAX_FIELD, 1, key, name, at_ms)


# HSET a field to ARGV[2] if that is larger than its value (or it has none).
_MAX_FIELD = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


async def push_batch(
    ctx: dict[str, Any], delivery_id: str, args: dict[str, Any], target_ids: list[str]
) -> dict[str, int]:
    """arq job: one batch of a fan-out (see the module docstring)."""
    run: PushRun = ctx["flashwire_push"]
    planned = PlannedAlert.from_job_args(args, "pushed" if args["alert"]["kind"] != "line" else "subscribers")
    job_id = str(ctx.get("job_id", ""))
    worker = str(ctx.get("flashwire_worker", ""))
    job_try = int(ctx.get("job_try", 1))
    try:
        await run.redis.hset(run.keys.push_running, job_id, worker)
        return await run.batch(delivery_id, planned, target_ids, job_try=job_try, pool=ctx.get("redis"))
    except REDIS_DOWN as exc:
        # arq fails a job for good on any exception but Retry (../shared/PITFALLS.md 2.7); what
        # was settled is recorded, so the next try sends only the rest.
        log.warning("push batch %s: Redis unavailable (%s); trying again", delivery_id, exc)
        raise Retry(defer=backoff_s(job_try, None)) from exc
    finally:
        with contextlib.suppress(*REDIS_DOWN):
            await run.redis.hdel(run.keys.push_running, job_id)
