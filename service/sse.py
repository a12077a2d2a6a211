"""Server-sent events at /sse: the same messages and filters as /ws, for where WebSocket is blocked.

Each message is one `data:` line holding exactly the WebSocket frame. The event
`id` is the reader's complete cursor set (`ar:<cursor>,en:<cursor>`): every edition
it gave a cursor for, from the first message on, and every other one once its
snapshot is out. So a browser's automatic reconnection resumes every edition
with its own `Last-Event-ID` and misses nothing, wherever the stream dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from flashwire.core.protocol import hello_frame
from flashwire.core.settings import Settings
from flashwire.service.client_addresses import client_address, per_client_reason
from flashwire.service.connection_log import Ending, log_reader_connection
from flashwire.service.delivery import Delivery
from flashwire.service.errors import ApiError
from flashwire.service.hub import Hub
from flashwire.service.origins import OriginPolicy
from flashwire.service.subscription import Subscription, SubscriptionError, from_query
from flashwire.service.ws import PROTOCOL_SCOPE_KEY, STORE_ERRORS, STORE_UNAVAILABLE

log = logging.getLogger(__name__)

RETRY_MS = 2_000
RETRY_AFTER_S = "5"


async def sse_endpoint(request: Request) -> Response:
    """GET /sse?editions=…&topics=…&min_urgency=…&since=… (or Last-Event-ID).

    A request refused here (400, 403, 429, 503) gets its reader connection line here; a stream gets
    it from ReaderStream when it ends (service/connection_log.py).
    """
    started = time.monotonic()
    try:
        return _open_stream(request, started)
    except Exception as exc:
        # Anything but an ApiError is a bug, which Starlette answers with 500.
        status = exc.status if isinstance(exc, ApiError) else 500
        error = "" if isinstance(exc, ApiError) else type(exc).__name__
        log_reader_connection("sse", request.scope, started, Ending("server", status=status, error=error))
        raise


def _open_stream(request: Request, started: float) -> ReaderStream:
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
    address = client_address(request.scope)
    if hub.clients.full(address):
        request.app.state.edge_counts.reader_refused_per_client("sse")  # service/metrics.py
        raise ApiError(
            429,
            "too_many_connections",
            per_client_reason(settings.max_connections_per_client),
            headers={"Retry-After": RETRY_AFTER_S},
        )
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
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", **origins.cors_headers(request)}
    return ReaderStream(request, hub, settings, subscription, started, headers, address)


class ReaderStream(StreamingResponse):
    """One SSE reader's response: registered with the hub and counted (in the node's connections
    and its client address's, `address`) from the start, deregistered, counted out and logged
    when the response ends, however it ends (also if the client left before the first event, when
    the event generator never ran)."""

    def __init__(
        self,
        request: Request,
        hub: Hub,
        settings: Settings,
        subscription: Subscription,
        started: float,
        headers: dict[str, str],
        address: str,
    ) -> None:
        self._scope = request.scope
        self._address = address
        self._hub = hub
        self._subscription = subscription
        self._started = started
        self._hello = hello_frame(settings)
        self._ending = Ending("server", status=200)
        self._delivery = Delivery(
            hub, request.app.state.reach, settings, subscription, on_overflow=self._cut_off
        )
        self._events = self._write_events()
        super().__init__(self._events, media_type="text/event-stream", headers=headers)
        self._delivery.register()
        hub.connections += 1
        hub.clients.add(address)

    def _cut_off(self) -> None:
        # The reader stopped reading: its stream is stuck in a send that will not finish, so the
        # outbox overflowing is noticed only here (the hub calls this for every event it cannot
        # queue). Drop the connection, as a WebSocket gets 4001; the browser reconnects with its
        # Last-Event-ID and loses nothing.
        if self._ending.reason:
            return
        self._ending = self._ending._replace(reason="too slow: outgoing queue overflowed")
        self._hub.stats.slow_closed += 1
        transport = getattr(self._scope.get(PROTOCOL_SCOPE_KEY), "transport", None)
        if transport is not None:
            transport.abort()

    async def _write_events(self) -> AsyncGenerator[str, None]:
        delivery = self._delivery
        try:
            yield f"retry: {RETRY_MS}\ndata: {self._hello}\n\n"
            async for frame in delivery.frames():
                token = delivery.resume_token()
                # An empty id would reset the browser's Last-Event-ID: only send real positions.
                yield f"id: {token}\ndata: {frame}\n\n" if token else f"data: {frame}\n\n"
        except STORE_ERRORS as exc:
            # The stream ends; the browser reconnects with its Last-Event-ID and loses nothing.
            log.warning("SSE reader ended: the store is unavailable (%s)", exc)
            self._ending = self._ending._replace(reason=STORE_UNAVAILABLE, error=type(exc).__name__)

    async def listen_for_disconnect(self, receive: Receive) -> None:
        # Starlette runs this beside the stream (ASGI HTTP spec < 2.4, which uvicorn speaks) and
        # cancels the stream when it returns: the client has gone.
        await super().listen_for_disconnect(receive)
        self._left()

    def _left(self) -> None:
        if not self._ending.reason:  # cut off by the server is not the client leaving
            self._ending = self._ending._replace(closed_by="client")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            # ASGI HTTP spec >= 2.4: a send to a gone client fails instead.
            self._left()
        except BaseException as exc:
            self._ending = self._ending._replace(error=type(exc).__name__)
            raise
        finally:
            self._delivery.unregister()
            self._hub.connections -= 1
            self._hub.clients.remove(self._address)
            log_reader_connection("sse", self._scope, self._started, self._ending, self._subscription)
            # Left suspended at a `yield` if the stream was cancelled in a send: close it now, not
            # when the garbage collector finds it.
            await self._events.aclose()


routes = [Route("/sse", sse_endpoint, methods=["GET"])]
