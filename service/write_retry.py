"""Desk writes that ride out a Sentinel failover inside the request, instead of answering 503.

During a failover every step of a desk write can meet the moving primary: the
token lookup, the replay check, the rate limit's count (which fails closed:
503) and the desk script. So the whole endpoint is run again, with backoff, for
up to FLASHWIRE_REDIS_FAILOVER_RETRY_S (core/failover.py), when it fails with a
Redis connection error or answers 503 "unavailable"; the editor sees a slow
201/202, not an error. With a single Redis (no Sentinel) the window is 0: one
attempt, a 503 at once, and the client retries with its Idempotency-Key.

Repeating the endpoint is safe (../shared/PITFALLS.md 3.3): the reads repeat
harmlessly; the desk script stores its answer under an idempotency key in the
same script, so a repeat of a script whose reply was lost returns the stored
answer and never appends the action twice. A request without an
Idempotency-Key gets a key made here, once per request, for all its attempts
(the request scope's NODE_KEY, kept 300 s: service/desk.py; not `request.state`, which
may be one dict shared by every request of the app's lifespan state). What may
repeat is the rate limit's count of an attempt that failed after it: a request
can count twice against FLASHWIRE_POST_RATE_LIMIT during a failover.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from flashwire.core.failover import through_failover
from flashwire.service.errors import ApiError

Endpoint = Callable[[Request], Awaitable[Response]]
NODE_KEY = "flashwire.node_idempotency_key"


class _Unavailable(OSError):
    """A 503 answer of one attempt, carried through the retry as an outage (core/failover.py)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


def riding_failover(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, run again while the primary moves (app.state.failover_retry_s seconds at most)."""

    async def attempt(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            if exc.status == 503:
                raise _Unavailable(exc) from None
            raise

    async def wrapped(request: Request) -> Response:
        window_s: float = request.app.state.failover_retry_s
        if not window_s:
            return await endpoint(request)
        request.scope[NODE_KEY] = secrets.token_hex(16)
        what = f"{request.method} {request.url.path}"
        try:
            return await through_failover(lambda: attempt(request), window_s=window_s, what=what)
        except _Unavailable as unavailable:
            raise unavailable.error from None

    wrapped.__name__ = endpoint.__name__
    wrapped.__doc__ = endpoint.__doc__
    return wrapped
