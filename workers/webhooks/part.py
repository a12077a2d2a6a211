"""The webhook part of a worker process: the dispatcher, the delivery queue's arq runner, the watchdog.

Built by the supervisor (workers/supervisor.py) beside the desk consumer and the scheduled jobs,
each piece a task that waits out Redis outages by itself. Deliveries run on an arq queue of
their own (`Keys.webhook_queue`) with their own `ArqRunner` (workers/arq_runner.py), so a slow
receiver never delays an embargo release, and with a short job timeout (the HTTP deadline plus
a margin, ../shared/PITFALLS.md 2.10).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from arq.connections import ArqRedis
from arq.worker import func
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.core.webhook_store import EndpointStore
from flashwire.workers.arq_runner import ArqQueue, ArqRunner
from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import REDIS_DOWN, Backoff, OutageLog
from flashwire.workers.webhooks.chain import JOB_FUNCTION, Chain, Watchdog
from flashwire.workers.webhooks.deliver import Deliveries, deliver_webhook
from flashwire.workers.webhooks.dispatcher import Dispatcher
from flashwire.workers.webhooks.metrics import WebhookMetrics
from flashwire.workers.webhooks.sender import Sender

log = logging.getLogger(__name__)

QUEUE_PART = "webhook deliveries (arq)"
WATCHDOG_PART = "webhook watchdog"
WATCHDOG_INTERVAL_S = 1.0
# An attempt's job may take the HTTP deadline plus the address lookup and Redis round trips.
JOB_MARGIN_S = 10.0
# A job re-run after crashes counts as an arq "try"; the chain, not arq, decides when to stop.
JOB_MAX_TRIES = 1_000


def delivery_queue(keys: Keys, settings: Settings) -> ArqQueue:
    """The arq queue of webhook attempts."""
    return ArqQueue(
        name=keys.webhook_queue,
        part=QUEUE_PART,
        functions=[func(deliver_webhook, name=JOB_FUNCTION, max_tries=JOB_MAX_TRIES)],
        max_jobs=settings.webhook_max_jobs,
        job_timeout_s=settings.webhook_timeout_s + JOB_MARGIN_S,
        metrics_name="webhooks",
    )


class WebhookPart:
    """Everything webhook-related one worker process runs; `tasks()` to start, `aclose()` after."""

    def __init__(
        self,
        settings: Settings,
        keys: Keys,
        *,
        name: str,
        redis: Redis,
        pool: ArqRedis,
        outages: OutageLog,
        metrics: WorkerMetrics,
    ) -> None:
        self.metrics = WebhookMetrics(metrics.registry)
        self._outages = outages
        self.store = EndpointStore(redis, keys, log_retention=settings.webhook_log_retention)
        self.chain = Chain(
            redis, pool, keys, delivery_retention_s=settings.webhook_delivery_retention_days * 86_400
        )
        self.sender = Sender(
            timeout_s=settings.webhook_timeout_s,
            allow_private=settings.webhook_allow_private,
            ca_file=settings.webhook_ca_file,
        )
        deliveries = Deliveries(self.store, self.chain, self.sender, settings, self.metrics, runner=name)
        # Its job counts are exported with queue="webhooks" (workers/metrics.py).
        self.runner = ArqRunner(
            pool,
            settings,
            keys,
            job_ctx={"flashwire_webhooks": deliveries},
            outages=outages,
            metrics=metrics,
            queue=lambda: delivery_queue(keys, settings),
        )
        self.dispatcher = Dispatcher(
            redis,
            keys,
            settings,
            self.store,
            name=name,
            kick=self.chain.kick,
            outages=outages,
            metrics=self.metrics,
            worker_metrics=metrics,
        )
        self.watchdog = Watchdog(redis, keys, self.store, self.chain)
        self._worker_metrics = metrics

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The coroutines to run as the worker's tasks, by task name."""
        return {
            "webhook-dispatcher": self.dispatcher.run(),
            "webhook-deliveries": self.runner.run(),
            "webhook-watchdog": self._watch(),
        }

    async def _watch(self) -> None:
        """Sweep every WATCHDOG_INTERVAL_S until cancelled, through Redis outages."""
        backoff = Backoff()
        while True:
            try:
                await self.watchdog.sweep()
                self._outages.regained(WATCHDOG_PART)
                backoff.reset()
                await asyncio.sleep(WATCHDOG_INTERVAL_S)
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                self._outages.lost(WATCHDOG_PART, exc)
                await asyncio.sleep(backoff.next_delay())
            except Exception:
                self._worker_metrics.error("unexpected")
                log.exception("webhook watchdog: unexpected error; retrying")
                await asyncio.sleep(WATCHDOG_INTERVAL_S)

    async def aclose(self) -> None:
        """Close the HTTP client (the tasks are stopped by the supervisor first)."""
        await self.sender.aclose()
