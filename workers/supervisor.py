"""One worker process: the desk consumer, the heartbeat and arq, each kept alive through Redis outages.

The three run as sibling tasks on one event loop, and none of them depends on
another to survive: the desk consumer (the live path: desk entries to tickers)
and the heartbeat wait out a lost Redis in their own loops, and `ArqRunner`
replaces arq's Worker after each outage. An outage of any length, a SIGKILL or a
clean SHUTDOWN of redis-server, therefore only pauses the worker; it resumes
applying, expiring and releasing by itself when Redis is back. SIGINT and
SIGTERM stop the process cleanly (exit status 0), and it leaves the heartbeat
set on the way out so health reports the missing worker at once.

With FLASHWIRE_WORKER_METRICS_PORT set, the process also serves its metrics
(workers/metrics.py) from start to stop; a port that cannot be bound stops the
worker at start-up, as a bad setting does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

from arq.connections import ArqRedis
from arq.worker import func
from redis.asyncio import Redis

from flashwire.core.key_layout import refuse_old_layout
from flashwire.core.keys import Keys
from flashwire.core.redis_cluster import prepare
from flashwire.core.redis_connect import RedisConnector
from flashwire.core.settings import Settings
from flashwire.core.tasks import cancel_until_done
from flashwire.workers.arq_runner import ArqQueue, ArqRunner
from flashwire.workers.fanout import DeskConsumer
from flashwire.workers.heartbeat import Heartbeat
from flashwire.workers.metrics import MetricsServer, WorkerMetrics
from flashwire.workers.outage import REDIS_DOWN, OutageLog, quiet_orphaned_outage_errors
from flashwire.workers.push.base import PushSender
from flashwire.workers.push.batch import PushRun, push_batch
from flashwire.workers.push.planner import PushPlanner
from flashwire.workers.push.recovery import BatchRevival
from flashwire.workers.push.senders import build_senders
from flashwire.workers.webhooks.part import WebhookPart

log = logging.getLogger(__name__)

# Blocking reads are 1 s at a time: a 15 s socket timeout notices a half-open connection.
SOCKET_TIMEOUT_S = 15
FORGET_TIMEOUT_S = 2.0
# Stopping: cancel the parts again every CANCEL_AGAIN_S until they end, for at most STOP_TIMEOUT_S.
CANCEL_AGAIN_S = 0.5
STOP_TIMEOUT_S = 10.0
# Push batches one worker runs at once (their sends share FLASHWIRE_PUSH_CONCURRENCY), how long
# one may take (a batch whose worker died runs again at once: workers/push/recovery.py), and how
# often arq looks for new ones (a fan-out starts within this of its line).
PUSH_BATCHES_AT_ONCE = 8
PUSH_JOB_TIMEOUT_S = 300
PUSH_POLL_DELAY_S = 0.05


def worker_name() -> str:
    """This process's name as a desk consumer and in the heartbeat set: unique per host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the parts until they have all ended (flashwire/core/tasks.py says why once is not
    always enough), for at most STOP_TIMEOUT_S. A part still running after that is a bug; the
    process exits anyway rather than outlive its stop."""
    pending = await cancel_until_done(tasks, timeout_s=STOP_TIMEOUT_S, again_s=CANCEL_AGAIN_S)
    if pending:
        log.error("worker parts %s did not stop; exiting", sorted(t.get_name() for t in pending))
        logging.shutdown()
        os._exit(1)


class WorkerSupervisor:
    """Runs one worker process until SIGINT/SIGTERM (or `stop()`)."""

    def __init__(self, settings: Settings, *, name: str | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.name = name or worker_name()
        self.metrics = WorkerMetrics()
        self.outages = OutageLog(metrics=self.metrics)
        self._stopping: asyncio.Event | None = None

    def stop(self) -> None:
        """Ask the worker to stop (what SIGINT and SIGTERM do)."""
        if self._stopping is not None:
            self._stopping.set()

    def _serve_metrics(self) -> MetricsServer | None:
        """Start the metrics endpoint if a port is set; SystemExit if it cannot listen."""
        port, host = self.settings.worker_metrics_port, self.settings.host
        if not port:
            return None
        server = MetricsServer(self.metrics.registry, port, host)
        try:
            server.start()
        except OSError as exc:
            raise SystemExit(
                f"worker: cannot serve metrics on {host}:{port} ({exc}); set FLASHWIRE_WORKER_METRICS_PORT "
                "to a free port, or to 0 for none"
            ) from None
        return server

    def _push_parts(
        self, redis: Redis, arq_pool: ArqRedis, job_ctx: dict[str, Any], senders: dict[str, PushSender]
    ) -> list[asyncio.Task[None]]:
        """The push planner, the push queue's arq runner and the revival of dead workers' batches
        (workers/push/), when a push platform is configured."""
        run = PushRun(redis, self.keys, self.settings, senders, self.metrics)
        ctx = {**job_ctx, "flashwire_push": run, "flashwire_worker": self.name}

        def queue() -> ArqQueue:
            return ArqQueue(
                name=self.keys.push_queue,
                part="push fan-out (arq)",
                functions=[func(push_batch, name="push_batch")],
                max_jobs=PUSH_BATCHES_AT_ONCE,
                job_timeout_s=PUSH_JOB_TIMEOUT_S,
                poll_delay_s=PUSH_POLL_DELAY_S,
                metrics_name="push",
            )

        runner = ArqRunner(arq_pool, self.settings, self.keys, job_ctx=ctx, outages=self.outages, queue=queue)
        planner = PushPlanner(
            redis,
            arq_pool,
            self.keys,
            self.settings,
            name=self.name,
            outages=self.outages,
            metrics=self.metrics,
        )
        return [
            asyncio.create_task(planner.run(), name="push-planner"),
            asyncio.create_task(runner.run(), name="push-arq"),
            asyncio.create_task(BatchRevival(redis, arq_pool, self.keys).run(), name="push-revival"),
        ]

    async def run(self) -> None:
        """Start the parts, wait for a stop signal, then stop them."""
        self._stopping = asyncio.Event()
        metrics_server = self._serve_metrics()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(quiet_orphaned_outage_errors)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        # The main Redis: through the sentinels, or a Cluster client, when configured; arq's pool
        # built here too, never through arq's own RedisSettings (core/redis_connect.py;
        # ../shared/PITFALLS.md 3.13).
        connector = RedisConnector(self.settings)
        redis = connector.primary(Redis, socket_timeout_s=SOCKET_TIMEOUT_S)
        with contextlib.suppress(*REDIS_DOWN):
            await prepare(redis)
        # Cluster key layout: refuse to start beside data in the old layout (a Redis that is down
        # now is waited out below, and checked at the next start).
        with contextlib.suppress(*REDIS_DOWN):
            await refuse_old_layout(redis, self.keys)
        # arq's queues and job keys only (FLASHWIRE_ARQ_REDIS_URL; docs/architecture.md, "arq on a
        # Redis of its own"): the jobs read and write everything else through `redis`.
        arq_pool = connector.arq(socket_timeout_s=SOCKET_TIMEOUT_S)
        job_ctx = {"flashwire_settings": self.settings, "flashwire_redis": redis, "flashwire_keys": self.keys}
        runner = ArqRunner(arq_pool, self.settings, self.keys, job_ctx=job_ctx, outages=self.outages)
        consumer = DeskConsumer(
            redis,
            self.keys,
            self.settings,
            name=self.name,
            on_schedule=runner.schedule_release,
            outages=self.outages,
        )
        heartbeat = Heartbeat(redis, self.keys, self.name, self.outages)
        tasks = [
            asyncio.create_task(consumer.run(), name="desk-consumer"),
            asyncio.create_task(heartbeat.run(), name="heartbeat"),
            asyncio.create_task(runner.run(), name="arq"),
        ]
        senders = build_senders(self.settings) if self.settings.push_platforms else {}
        if senders:
            tasks += self._push_parts(redis, arq_pool, job_ctx, senders)
        # -- partner webhooks (workers/webhooks/): dispatcher, delivery queue, watchdog --
        webhooks = WebhookPart(
            self.settings,
            self.keys,
            name=self.name,
            redis=redis,
            pool=arq_pool,
            outages=self.outages,
            metrics=self.metrics,
        )
        tasks += [asyncio.create_task(coro, name=name) for name, coro in webhooks.tasks().items()]
        log.info("worker %s started", self.name)
        stopping = asyncio.create_task(self._stopping.wait(), name="stop-signal")
        ended: list[str] = []
        try:
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping:
                    # Each part loops forever: one that ended is a bug, worth a traceback and an
                    # exit status that makes the process manager restart us.
                    error = None if task.cancelled() else task.exception()
                    log.error("worker part %s ended", task.get_name(), exc_info=error)
                    ended.append(task.get_name())
        finally:
            await _cancel_all([stopping, *tasks])
            try:
                await asyncio.wait_for(heartbeat.forget(), FORGET_TIMEOUT_S)
            except REDIS_DOWN as exc:  # TimeoutError is an OSError
                log.info("could not leave the heartbeat set (%s); health notices within 5 s", exc)
            for sender in senders.values():
                await sender.aclose()
            await webhooks.aclose()
            await connector.aclose()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if metrics_server is not None:
                await asyncio.to_thread(metrics_server.stop)
            log.info("worker %s stopped", self.name)
        if ended:
            raise RuntimeError(f"worker parts ended unexpectedly: {', '.join(ended)}")
