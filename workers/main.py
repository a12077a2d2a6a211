"""The arq worker's wiring: the desk consumer task plus the scheduled jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Worker, func
from redis.asyncio import Redis

from service.keys import Keys
from service.settings import Settings
from workers.fanout import DeskConsumer
from workers.schedule import every_second, release_embargo, release_time

log = logging.getLogger(__name__)


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["flashwire_settings"]
    keys = Keys(settings.key_prefix)
    # The consumer blocks 1 s at a time: a 15 s socket timeout notices a half-open connection.
    redis = Redis.from_url(settings.redis_url, socket_timeout=15, socket_keepalive=True)
    arq_redis = ctx["redis"]

    async def schedule_release(line_id: str, edition: str, embargo_ms: int) -> None:
        await arq_redis.enqueue_job(
            "release_embargo",
            line_id,
            edition,
            embargo_ms,
            _job_id=f"release:{line_id}:{embargo_ms}",
            _defer_until=release_time(embargo_ms),
            _queue_name=keys.arq_queue,
        )

    consumer = DeskConsumer(
        redis, keys, settings, name=f"{socket.gethostname()}-{os.getpid()}", on_schedule=schedule_release
    )
    ctx["flashwire_redis"] = redis
    ctx["flashwire_keys"] = keys
    ctx["flashwire_consumer"] = asyncio.create_task(consumer.run(), name="desk-consumer")


async def _shutdown(ctx: dict[str, Any]) -> None:
    task: asyncio.Task[None] | None = ctx.get("flashwire_consumer")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    redis: Redis | None = ctx.get("flashwire_redis")
    if redis is not None:
        await redis.aclose()


def build_worker(settings: Settings) -> Worker:
    """An arq Worker running the desk consumer and the expiry cron job."""
    keys = Keys(settings.key_prefix)
    return Worker(
        functions=[func(release_embargo, name="release_embargo")],
        cron_jobs=[cron(every_second, second=set(range(60)), run_at_startup=True)],
        on_startup=_startup,
        on_shutdown=_shutdown,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=keys.arq_queue,
        poll_delay=0.2,
        keep_result=0,
        ctx={"flashwire_settings": settings},
        handle_signals=True,
    )


def run_worker(settings: Settings | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    # arq logs every cron run at INFO: once a second for expiry is noise.
    logging.getLogger("arq").setLevel(logging.WARNING)
    build_worker(settings or Settings.from_env()).run()
