"""Riding a Sentinel failover out inside one request: retry an idempotent Redis call while the primary moves.

redis-py learns of a failover only from an error (it does not listen for
`+switch-master`: ../shared/PITFALLS.md 3.2), and the command that met the error
fails and is not retried (PITFALLS 3.1): a dropped connection, a demoted primary
answering READONLY (which redis-py's Sentinel connection turns into a
ConnectionError), or no primary known yet (MasterNotFoundError, a ConnectionError)
while the sentinels agree. Each passes within the sentinels' down-after-milliseconds
plus the failover, so the call is tried again with capped backoff for up to
`window_s` (FLASHWIRE_REDIS_FAILOVER_RETRY_S).

Only for calls that are safe to repeat (PITFALLS 3.3): a write whose reply was
lost may have been applied; the desk's script stores its answer under the
request's Idempotency-Key in the same script, so a repeat returns that answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a moving primary looks like to a client (TimeoutError: a reply lost to a SIGKILLed primary).
PRIMARY_MOVING: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OSError,
)
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 0.5


async def through_failover(call: Callable[[], Awaitable[T]], *, window_s: float, what: str) -> T:
    """`call()`, tried again on PRIMARY_MOVING errors until it succeeds or `window_s` seconds have
    passed since the first attempt (then the last error is raised). `window_s` 0: one attempt."""
    deadline = time.monotonic() + window_s
    delay_s = FIRST_DELAY_S
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await call()
        except PRIMARY_MOVING as exc:
            if time.monotonic() + delay_s > deadline:
                raise
            if attempts == 1:
                log.warning("%s: Redis primary unavailable (%s: %s); retrying for up to %.0f s", what,
                            type(exc).__name__, exc, window_s)  # fmt: skip
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, MAX_DELAY_S)
            continue
        if attempts > 1:
            log.warning("%s: done after %d attempts through a failover", what, attempts)
        return result
