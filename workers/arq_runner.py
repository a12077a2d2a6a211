"""arq, kept running through Redis outages: the scheduled jobs (embargo release, expiry sweep),
and any other queue of jobs the worker runs (`ArqQueue`: push fan-out, webhook deliveries).

arq 0.28's Worker ends its main loop on the first Redis error its connection pool
cannot hide (python-arq/arq#435, #498): an outage longer than ~0.1 s killed the
whole worker. Its state (the semaphore, the cron schedule, the job tasks) is not
meant to outlive that, so `ArqRunner` does not try to resume a Worker: when
one's main loop ends on a Redis error, it discards it (cancelling its job tasks:
every job is idempotent, and the expiry sweep and overdue-release backstop run
every second anyway), waits for Redis with capped backoff, makes runnable again
the jobs the discarded Worker had started, and starts a fresh Worker.

The Redis client (an `ArqRedis`) belongs to the runner, not to any one Worker,
so enqueuing release jobs from the desk consumer never depends on which Worker
is current, and socket timeouts apply (arq's own pool has none). The runner
never calls `Worker.close()`: it talks to Redis and would fail during the very
outage it is cleaning up after.

arq counts its jobs per Worker (complete, failed, retried); the runner adds up those of the
Workers it discarded, so the worker's metrics (workers/metrics.py) see totals for the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.cron import cron
from arq.worker import Function, Worker, func

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.workers.metrics import JOB_OUTCOMES, WorkerMetrics
from flashwire.workers.outage import REDIS_DOWN, Backoff, OutageLog
from flashwire.workers.schedule import every_second, release_embargo, release_time

log = logging.getLogger(__name__)

PART = "scheduled jobs (arq)"
# arq's ids of cron runs: "cron:<function name>:<run time in ms>".
CRON_JOB_PREFIX = "cron:"
POLL_DELAY_S = 0.2
# After an error that is not Redis going away (a bug), don't restart arq in a tight loop.
CRASH_PAUSE_S = 1.0


@dataclass(frozen=True)
class ArqQueue:
    """One arq queue and the jobs a worker process runs from it.

    `job_timeout_s` also decides how soon a job lost with a killed worker runs again: arq marks
    a started job in progress for `job_timeout_s + 10` s and no worker takes it until then
    (../shared/PITFALLS.md 2.10), so a queue of short jobs gets a short timeout.
    """

    name: str
    part: str
    functions: Sequence[Function]
    cron_jobs: Sequence[Any] = field(default_factory=tuple)
    max_jobs: int = 10
    job_timeout_s: float = 300
    poll_delay_s: float = POLL_DELAY_S
    # The `queue` label of its job counts (flashwire_worker_arq_jobs_total).
    metrics_name: str = "scheduled"


class ArqRunner:
    """Runs arq's Worker for one queue, replacing it after each Redis outage."""

    def __init__(
        self,
        pool: ArqRedis,
        settings: Settings,
        keys: Keys,
        *,
        job_ctx: dict[str, Any],
        outages: OutageLog,
        metrics: WorkerMetrics | None = None,
        queue: Callable[[], ArqQueue] | None = None,
    ) -> None:
        # Called for each new Worker: a cron job's next-run state belongs to one Worker.
        self._make_queue = queue if queue is not None else (lambda: scheduled_jobs(keys))
        self._queue = self._make_queue()
        self._pool = pool
        self._settings = settings
        self._keys = keys
        self._job_ctx = job_ctx
        self._outages = outages
        self._metrics = metrics if metrics is not None else outages.metrics
        self._backoff = Backoff()
        self._orphaned_jobs: list[str] = []
        self.generations = 0
        self._worker: Worker | None = None
        self._discarded_jobs = dict.fromkeys(JOB_OUTCOMES, 0)
        self._metrics.count_jobs(self.job_counts, self._queue.metrics_name)

    def job_counts(self) -> dict[str, int]:
        """arq's jobs over every Worker of this process: complete, failed, retried."""
        counts = dict(self._discarded_jobs)
        worker = self._worker
        if worker is not None:
            for outcome in JOB_OUTCOMES:
                counts[outcome] += int(getattr(worker, f"jobs_{outcome}", 0))
        return counts

    async def schedule_release(self, line_id: str, edition: str, embargo_ms: int) -> None:
        """Enqueue the release job of an embargoed line, deferred to its release time.

        Called after the schedule was committed: if Redis goes away now, the line stays
        scheduled and the every-second backstop (workers/schedule.py) releases it on time; so
        this never fails the desk consumer.
        """
        try:
            await self._pool.enqueue_job(
                "release_embargo",
                line_id,
                edition,
                embargo_ms,
                _job_id=f"release:{line_id}:{embargo_ms}",
                _defer_until=release_time(embargo_ms),
                _queue_name=self._keys.arq_queue,
            )
        except REDIS_DOWN as exc:
            log.info("release job of %s not enqueued (%s); the backstop releases it", line_id, exc)

    def _build(self) -> Worker:
        queue = self._make_queue()
        return Worker(
            functions=list(queue.functions),
            cron_jobs=list(queue.cron_jobs),
            redis_pool=self._pool,
            queue_name=queue.name,
            poll_delay=queue.poll_delay_s,
            max_jobs=queue.max_jobs,
            job_timeout=queue.job_timeout_s,
            keep_result=0,
            ctx=dict(self._job_ctx),
            on_startup=self._started,
            # The supervisor owns SIGINT/SIGTERM: arq's handlers would belong to one Worker only.
            handle_signals=False,
        )

    async def _started(self, ctx: dict[str, Any]) -> None:
        """arq's on_startup: it has reached Redis, so this outage is over for the scheduled jobs."""
        self._outages.regained(self._queue.part)
        self._backoff.reset()
        if self.generations > 1:
            log.info("%s running again (arq worker #%d)", self._queue.part, self.generations)

    async def run(self) -> None:
        """Run arq until cancelled; a Redis outage of any length ends one Worker, never the runner."""
        while True:
            worker = self._worker = self._build()
            self.generations += 1
            try:
                await worker.async_run()
                log.warning("arq's main loop returned; starting it again")
            except REDIS_DOWN as exc:
                self._outages.lost(self._queue.part, exc)
            except Exception:
                self._metrics.error("unexpected")
                log.exception("arq's main loop failed; starting it again")
                await asyncio.sleep(CRASH_PAUSE_S)
            finally:
                await self._discard(worker)
            await self._wait_for_redis()

    async def _discard(self, worker: Worker) -> None:
        """Stop a Worker whose main loop has ended, without talking to Redis."""
        self._orphaned_jobs.extend(worker.tasks)
        tasks = [*worker.tasks.values(), *worker.job_tasks.values()]
        if worker.main_task is not None:
            tasks.append(worker.main_task)
        for task in tasks:
            task.cancel()
        # Their errors (the same lost connection) are expected and already reported once.
        await asyncio.gather(*tasks, return_exceptions=True)
        # Its job counts join the totals, in one step with forgetting it (no await between).
        for outcome in JOB_OUTCOMES:
            self._discarded_jobs[outcome] += int(getattr(worker, f"jobs_{outcome}", 0))
        self._worker = None

    async def _wait_for_redis(self) -> None:
        """PING with capped backoff until Redis answers, then free the discarded Worker's jobs."""
        while True:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                await self._pool.ping()
                await self._release_orphans()
                return
            except REDIS_DOWN as exc:
                self._outages.lost(self._queue.part, exc)

    async def _release_orphans(self) -> None:
        """Delete the in-progress marks of jobs a discarded Worker started but never finished.

        arq marks a started job in progress for its timeout plus 10 s (here 310 s) and skips
        it until then; only this process's discarded Worker can have set these marks.
        A cron run (the every-second sweep) is dropped instead: the next second's run does the
        same work, and arq would otherwise retry it once and log "max retries exceeded".
        """
        if not self._orphaned_jobs:
            return
        cron_runs = [job_id for job_id in self._orphaned_jobs if job_id.startswith(CRON_JOB_PREFIX)]
        keys = [in_progress_key_prefix + job_id for job_id in self._orphaned_jobs]
        keys += [prefix + job_id for job_id in cron_runs for prefix in (job_key_prefix, retry_key_prefix)]
        async with self._pool.pipeline(transaction=False) as pipe:
            pipe.delete(*keys)
            if cron_runs:
                pipe.zrem(self._queue.name, *cron_runs)
            await pipe.execute()
        self._orphaned_jobs.clear()


def scheduled_jobs(keys: Keys) -> ArqQueue:
    """The queue of the release and expiry jobs, with a fresh cron job (its next-run state
    belongs to one Worker)."""
    return ArqQueue(
        name=keys.arq_queue,
        part=PART,
        functions=[func(release_embargo, name="release_embargo")],
        cron_jobs=[cron(every_second, second=set(range(60)), run_at_startup=True)],
    )
