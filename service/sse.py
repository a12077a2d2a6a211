"""Server-sent events at /sse: the same messages and filters as /ws, for where WebSocket is blocked.

Each message is one `data:` line holding exactly the WebSocket frame. The event
`id` is the reader's complete cursor set (`ar:<cursor>,en:<cursor>`): every edition
it gave a cursor for, from the first message on, and every other one once its
snapshot is out. So a browser's automatic reconnection resumes every edition
with its own `Last-Event-ID` and misses nothing, wherever the stream dropped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flashwire.core.protocol import hello_frame
from flashwire.core.settings import Settings
from flashwire.service.delivery import Delivery
from flashwire.service.errors import ApiError
from flashwire.service.hub import Hub
from flashwire.service.origins import OriginPolicy
from flashwire.service.subscription import SubscriptionError, from_query
from flashwire.service.ws import PROTOCOL_SCOPE_KEY, STORE_ERRORS, STORE_UNAVAILABLE

log = logging.getLogger(__name__)

RETRY_MS = 2_000
RETRY_AFTER_S = "5"


async def sse_endpoint(request: Request) -> Response:
    """GET /sse?editions=…&topics=…&min_urgency=…&since=… (or Last-Event-ID)."""
    hub: Hub = request.app.state.hub
    settings: Settings = request.app.state.settings
    origins: OriginPolicy = request.app.state.origins
    if not origins.allows(request):
        raise ApiError(
            403, "forbidden", f"origin not allowed: {request.headers.get('origin')}", field="Origin"
        )
    query = dict(request.query_params)
    last_event_id = request.headers.get("last-event-id")
    if last_event_id:
        # The browser's reconnection keeps the original URL; its Last-Event-ID is newer.
        query["since"] = last_event_id
    query.setdefault("editions", "")
    try:
        subscription = from_query(settings, query)
    except SubscriptionError as exc:
        raise ApiError(400, "invalid", str(exc).partition(": ")[2], field=exc.field) from None
    assert subscription is not None
    if hub.connections >= settings.max_connections:
        raise ApiError(
            503,
            "unavailable",
            "connection limit reached; retry later",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    if not hub.ready:
        log.warning("SSE reader refused (503): %s", STORE_UNAVAILABLE)
        raise ApiError(503, "unavailable", STORE_UNAVAILABLE, headers={"Retry-After": RETRY_AFTER_S})
    cut_off: list[bool] = []

    def overflowed() -> None:
        # The reader stopped reading: its stream is stuck in a send that will not finish, so the
        # outbox overflowing is noticed only here (the hub calls this for every event it cannot
        # queue). Drop the connection, as a WebSocket gets 4001; the browser reconnects with its
        # Last-Event-ID and loses nothing.
        if cut_off:
            return
        cut_off.append(True)
        hub.stats.slow_closed += 1
        transport = getattr(request.scope.get(PROTOCOL_SCOPE_KEY), "transport", None)
        if transport is not None:
            transport.abort()

    delivery = Delivery(hub, request.app.state.reach, settings, subscription, on_overflow=overflowed)
    delivery.register()
    hub.connections += 1
    hello = hello_frame(settings)

    async def stream() -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\ndata: {hello}\n\n"
            async for frame in delivery.frames():
                token = delivery.resume_token()
                # An empty id would reset the browser's Last-Event-ID: only send real positions.
                yield f"id: {token}\ndata: {frame}\n\n" if token else f"data: {frame}\n\n"
        except STORE_ERRORS as exc:
            # The stream ends; the browser reconnects with its Last-Event-ID and loses nothing.
            log.warning("SSE reader ended: the store is unavailable (%s)", exc)
        finally:
            delivery.unregister()
            hub.connections -= 1

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", **origins.cors_headers(request)}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


routes = [Route("/sse", sse_endpoint, methods=["GET"])]
