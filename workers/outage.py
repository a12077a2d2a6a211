"""Riding out Redis outages: which errors mean "Redis is away", capped backoff, and quiet logging.

Every long-lived part of the worker (the desk consumer, the heartbeat, the arq
runner) loops forever and treats a lost Redis as a state, not a crash: it waits
with capped, jittered backoff and tries again. An outage of a minute would
otherwise fill the log with one warning (or traceback) per retry per part, so
the parts report to one `OutageLog` per process, which writes one WARNING when
the first part loses Redis and one when the last part has it back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flashwire.workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

# A refused or dropped connection, a server still loading its data after a restart
# (BusyLoadingError is a ConnectionError), a timeout, or a replica that is not yet
# promoted during a failover: each passes by itself, so each is waited out. redis-py
# reports a connection lost while a key is WATCHed as a WatchError ("A ConnectionError
# occurred on while watching"); the only WATCH in the worker is arq's enqueue_job, which
# handles the other WatchError (the key changed) itself, so one reaching us is an outage.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    WatchError,
    OSError,
)

BACKOFF_FIRST_S = 0.1
# Short enough that publishing resumes within ~2 s of Redis coming back; a PING every
# 2 s against a Redis that is down costs nothing.
BACKOFF_MAX_S = 2.0


class Backoff:
    """Exponential delays, capped, each drawn from [d/2, d] so several workers don't retry in step."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._next_s = first_s

    def next_delay(self) -> float:
        """The delay before the next attempt; grows until `max_s`."""
        ceiling = self._next_s
        self._next_s = min(self._next_s * 2, self._max_s)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """After a success: the next failure starts again from the first delay."""
        self._next_s = self._first_s


class OutageLog:
    """The parts of this process that cannot reach Redis right now; logs only the changes.

    It also counts every failed attempt (errors_total{kind="redis_unavailable"}) and each outage,
    and keeps `redis_up`, in the process's metrics (workers/metrics.py).
    """

    def __init__(self, process: str = "worker", *, metrics: WorkerMetrics | None = None) -> None:
        self._process = process
        self._down: set[str] = set()
        self._since = 0.0
        self.metrics = metrics if metrics is not None else WorkerMetrics()

    @property
    def down(self) -> bool:
        """Whether any part is waiting for Redis."""
        return bool(self._down)

    def lost(self, part: str, error: BaseException) -> None:
        """`part` failed to reach Redis; the first such failure of an outage is logged."""
        self.metrics.error("redis_unavailable")
        if not self._down:
            self._since = time.monotonic()
            self.metrics.redis_outages.inc()
            self.metrics.redis_up.set(0)
            log.warning(
                "%s: Redis unavailable (%s: %s); waiting for it with backoff, nothing is lost",
                self._process,
                type(error).__name__,
                error,
            )
        self._down.add(part)

    def regained(self, part: str) -> None:
        """`part` reached Redis again; logged when it was the last part still waiting."""
        if part not in self._down:
            return
        self._down.discard(part)
        if not self._down:
            self.metrics.redis_up.set(1)
            log.warning(
                "%s: Redis reachable again after %.1fs; applying, expiring and releasing resumed",
                self._process,
                time.monotonic() - self._since,
            )


def quiet_orphaned_outage_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An event-loop exception handler: a task that nobody awaits and that failed because Redis
    went away is reported in one line, not with a traceback; anything else goes to asyncio's
    default handler.

    arq finishes each job in a shielded task (`asyncio.shield(self.finish_job(...))` in
    `arq.worker.Worker.run_job`, arq 0.26 to 0.28): when an outage cancels the job's own task, the
    shielded one runs on, fails on the lost connection, and asyncio reports "Task exception was
    never retrieved" with a traceback. The outage itself is already logged once (`OutageLog`) and
    ridden out: arq runs the job again once its in-progress key expires, and every job is
    idempotent (workers/arq_runner.py)."""
    error = context.get("exception")
    if isinstance(error, REDIS_DOWN) and "never retrieved" in str(context.get("message", "")):
        task = context.get("future")
        name = task.get_name() if isinstance(task, asyncio.Task) else "a task"
        log.warning("%s failed while Redis was away (%s: %s)", name, type(error).__name__, error)
        return
    loop.default_exception_handler(context)
