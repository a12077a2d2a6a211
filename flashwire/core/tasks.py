"""Stopping asyncio tasks for sure: cancel, and cancel again, until they have ended.

One `task.cancel()` is not always enough. A cancellation that lands inside a library's own
timeout handling can come out as a TimeoutError (redis-py 5's connection timeouts), which a loop
that rides out Redis outages takes for one more outage, and goes on. It seemed rare, but it left
a worker "cancelling" after SIGTERM and, in the service, a lifespan shutdown waiting forever on
the hub's ticker reader (seen in the test suite under load). Cancelling again ends such a task at
its next await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

CANCEL_AGAIN_S = 0.5
"""Seconds between cancellations of a task that has not ended yet."""


async def cancel_until_done(
    tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float, again_s: float = CANCEL_AGAIN_S
) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` every `again_s` seconds until all have ended, for at most `timeout_s`.

    Returns the tasks still running after that (empty when all ended): a bug for the caller to
    report. The outcomes of the tasks that ended are retrieved, so none is logged as "exception
    was never retrieved".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    done_all = [task for task in tasks if task.done()]
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=min(again_s, max(deadline - loop.time(), 0)))
        done_all.extend(done)
        if pending and loop.time() >= deadline:
            break
    await asyncio.gather(*done_all, return_exceptions=True)
    return pending
