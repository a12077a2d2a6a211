"""The loop every stream consumer of the worker runs: prepare, claim what the dead left, read, and
wait out whatever goes wrong.

The desk consumer (workers/fanout.py), the push planner (workers/push/planner.py) and the webhook
dispatcher (workers/webhooks/dispatcher.py) each read a consumer group. Each runs until
cancelled through Redis outages of any length: a lost Redis is logged once per outage (OutageLog)
and retried with capped backoff, after which the consumer prepares again (its group, a catch-up);
a group that vanished (NOGROUP: the data was flushed) is made again at once; a command Redis
refused, or a bug, is logged with its traceback, counted, and retried a second later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ResponseError

from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import REDIS_DOWN, Backoff, OutageLog

log = logging.getLogger(__name__)

# After an error that is not Redis going away, wait this long before trying again.
ERROR_PAUSE_S = 1.0

Step = Callable[[], Awaitable[None]]


async def run_consumer(
    part: str,
    *,
    prepare: Step,
    claim: Step,
    step: Step,
    claim_every_s: float,
    outages: OutageLog,
    metrics: WorkerMetrics,
) -> None:
    """Run `step` (one blocking read and what follows it) until cancelled: `prepare` first and
    after each outage, `claim` at most every `claim_every_s` seconds. `part` names the consumer in
    the logs ("desk consumer")."""
    backoff = Backoff()
    ready = False
    next_claim = 0.0
    while True:
        try:
            if not ready:
                await prepare()
                ready = True
            if time.monotonic() >= next_claim:
                await claim()
                next_claim = time.monotonic() + claim_every_s
            await step()
            outages.regained(part)
            backoff.reset()
        except asyncio.CancelledError:
            raise
        except REDIS_DOWN as exc:
            outages.lost(part, exc)
            ready = False
            await asyncio.sleep(backoff.next_delay())
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                ready = False
                continue
            metrics.error("redis_refused")
            log.exception("%s: Redis refused a command; retrying", part)
            await asyncio.sleep(ERROR_PAUSE_S)
        except Exception:
            metrics.error("unexpected")
            log.exception("%s: unexpected error; retrying", part)
            await asyncio.sleep(ERROR_PAUSE_S)
