"""Server-sent events at /sse: the same messages and filters as /ws, for where WebSocket is blocked.

Each message is one `data:` line holding exactly the WebSocket frame. The event
`id` is the reader's complete cursor set (`ar:<cursor>,en:<cursor>`): every edition
it gave a cursor for, from the first message on, and every other one once its
snapshot is out. So a browser's automatic reconnection resumes every edition
with its own `Last-Event-ID` and misses nothing, wherever the stream dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashwire.core.protocol import hello_frame
from flashwire.core.settings import Settings
from flashwire.service.client_addresses import client_address, per_client_reason
from flashwire.service.connection_log import Ending, log_reader_connection
from flashwire.service.delivery import Delivery
from flashwire.service.errors import ApiError
from flashwire.service.hub import Hub
from flashwire.service.origins import OriginPolicy
from flashwire.service.sse_wire import SseWriter, encoding_for, message
from flashwire.service.subscription import Subscription, SubscriptionError, from_query
from flashwire.service.ws import PROTOCOL_SCOPE_KEY, STORE_ERRORS, STORE_UNAVAILABLE

log = logging.getLogger(__name__)

RETRY_MS = 2_000
RETRY_AFTER_S = "5"
CONTENT_TYPE = b"text/event-stream; charset=utf-8"
# How a stream ends unless something else happens to it (immutable: one for every stream).
STREAMING = Ending("server", status=200)


def sse_endpoint(request: Request) -> ReaderStream:
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
    return ReaderStream(request.scope, hub, settings, subscription, started, headers, address)


class ReaderStream:
    """One SSE reader's response: registered with the hub and counted (in the node's connections
    and its client address's, `address`) from the start, deregistered, counted out and logged
    when the response ends, however it ends (also if the client left before the first event).

    A plain ASGI response, no StreamingResponse: the connection's own task waits for the client
    to leave (`http.disconnect`), and a sender task sends the delivery's frames only until the
    reader has caught up. From then on the hub writes to the socket directly
    (service/sse_wire.py) and an idle reader is this object, its delivery and one suspended
    `receive()`: no generator, no task group, no second task. A `Reset` from the hub starts a
    sender again for the reset snapshots (`_reset`).
    """

    __slots__ = (
        "_address",
        "_delivery",
        "_ending",
        "_handler",
        "_head",
        "_hub",
        "_reach",
        "_scope",
        "_send",
        "_sender",
        "_settings",
        "_started",
        "_stopping",
        "_subscription",
    )

    def __init__(
        self,
        scope: Scope,
        hub: Hub,
        settings: Settings,
        subscription: Subscription,
        started: float,
        headers: dict[str, str],
        address: str,
    ) -> None:
        self._scope = scope
        self._address = address
        self._hub = hub
        self._settings = settings
        self._subscription = subscription
        self._started = started
        self._ending = STREAMING  # shared until something happens to this stream
        self._reach = scope["app"].state.reach
        self._delivery: Delivery | None = None
        self._sender: asyncio.Task[None] | None = None
        self._handler: asyncio.Task[Any] | None = None
        self._stopping = False
        # The response's headers, until they are sent.
        self._head: list[tuple[bytes, bytes]] | None = [(b"content-type", CONTENT_TYPE)] + [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
        ]
        # Counted from here (no await since the checks in _open_stream) until the response ends.
        hub.connections += 1
        hub.clients.add(address)

    def _writer(self) -> SseWriter | None:
        """The direct writer for this response, if its server protocol allows one."""
        if not self._settings.direct_writes:
            return None
        encoding = encoding_for(frozenset(self._subscription.editions))
        cycle = self._scope.get(PROTOCOL_SCOPE_KEY)
        return SseWriter.for_cycle(cycle, encoding, self._settings.send_buffer_max_bytes)

    async def __call__(self, receive: Receive, send: Send) -> None:
        """Serve the stream until the client leaves, the reader is cut off or the store fails.

        One coroutine frame (no helpers awaited), as it stays suspended for as long as the
        reader is connected.
        """
        try:
            await send(self._start_message())
            await send(_body(f"retry: {RETRY_MS}\n{message(hello_frame(self._settings))}"))
            # Only now does uvicorn know whether it frames the body in chunks (sse_wire.py).
            delivery = self._delivery = Delivery(
                self._hub,
                self._reach,
                self._settings,
                self._subscription,
                on_overflow=self._cut_off,
                on_reset=self._reset,
                writer=self._writer(),
            )
            delivery.register()
            self._send = send
            self._handler = asyncio.current_task()
            self._start_sender(delivery.frames())
            try:
                # Until the client leaves (or the body ended): a request body is read and ignored.
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not self._ending.reason:  # cut off by the server is not the client leaving
                    self._ending = self._ending._replace(closed_by="client")
            except asyncio.CancelledError:
                # Our own _stop() is absorbed; a cancellation from outside (server shutdown) is not.
                if not self._stopping or (self._handler is not None and self._handler.uncancel() > 0):
                    raise
            finally:
                self._stopping = True
                delivery.unregister()
                sender, result = self._sender, None
                if sender is not None:
                    sender.cancel()
                    [result] = await asyncio.gather(sender, return_exceptions=True)
            if isinstance(result, Exception):
                raise result
        except BaseException as exc:
            self._ending = self._ending._replace(error=type(exc).__name__)
            raise
        finally:
            if self._delivery is not None:
                self._delivery.unregister()
            self._hub.connections -= 1
            self._hub.clients.remove(self._address)
            log_reader_connection("sse", self._scope, self._started, self._ending, self._subscription)

    def _start_message(self) -> Message:
        # Not a local of __call__: that frame lives as long as the stream, the headers need not.
        head, self._head = self._head, None
        assert head is not None
        return {"type": "http.response.start", "status": 200, "headers": head}

    def _start_sender(self, frames: AsyncIterator[str]) -> None:
        self._sender = asyncio.create_task(self._send_frames(frames))
        self._sender.add_done_callback(self._sender_done)

    async def _send_frames(self, frames: AsyncIterator[str]) -> None:
        delivery, send = self._delivery, self._send
        assert delivery is not None
        try:
            async for frame in frames:
                await send(_body(message(frame, delivery.resume_token())))
        except STORE_ERRORS as exc:
            # The stream ends; the browser reconnects with its Last-Event-ID and loses nothing.
            log.warning("SSE reader ended: the store is unavailable (%s)", exc)
            self._ending = self._ending._replace(reason=STORE_UNAVAILABLE, error=type(exc).__name__)
            # The end of the body: uvicorn then answers the pending receive() with http.disconnect.
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        # Ending after handing over to direct writes is the usual case, and so is ending the body
        # when the store failed (the receive() returns then); only an error ends the connection
        # from here.
        if self._stopping or sender is not self._sender:
            return
        if not sender.cancelled() and sender.exception() is not None:
            self._stop()
        elif self._delivery is not None and self._delivery.direct:
            # Handed over: a finished task (and its coroutine) is no state worth keeping for hours.
            self._sender = None

    def _stop(self) -> None:
        """End the wait for the client, which runs in the connection's own task."""
        if not self._stopping and self._handler is not None:
            self._stopping = True
            self._handler.cancel()

    def _reset(self) -> None:
        # Called by the hub, synchronously, after it queued a Reset in the outbox. A reader that
        # was handed over to direct writes has no sender any more (or one that has just returned,
        # its done callback not yet run): start one to send the reset. A sender still running
        # sends it itself; after one that ended the stream (the store failed, or the reader was
        # cut off) there is nothing to send to.
        delivery, sender = self._delivery, self._sender
        if self._stopping or delivery is None or self._ending.reason:
            return
        if sender is not None and not sender.done():
            return
        # The cursors a direct reader was last given are not known here (the hub wrote them):
        # until each edition's reset snapshot is out, the event id names only those that are.
        delivery.cursors.clear()
        self._start_sender(delivery.live())

    def _cut_off(self) -> None:
        # The reader stopped reading: its outbox overflowed, or its unsent bytes passed the limit
        # while the hub wrote to it directly (the hub calls this for every event it cannot
        # queue). Drop the connection, as a WebSocket gets 4001; the browser reconnects with its
        # Last-Event-ID and loses nothing. The receive() then returns http.disconnect.
        if self._ending.reason:
            return
        self._ending = self._ending._replace(reason="too slow: outgoing queue overflowed")
        self._hub.stats.slow_closed += 1
        if self._sender is not None:
            self._sender.cancel()  # it may be waiting for a socket that does not drain
        transport = getattr(self._scope.get(PROTOCOL_SCOPE_KEY), "transport", None)
        if transport is not None:
            transport.abort()


def _body(text: str) -> Message:
    """One ASGI body message of the stream."""
    return {"type": "http.response.body", "body": text.encode(), "more_body": True}


class SseEndpoint:
    """The ASGI application of the /sse route (a plain one: see ReaderStream). `SseAhead` serves
    GET /sse before it gets here; the route still answers HEAD and, for other methods, 405."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return sse_endpoint(Request(scope, receive))(receive, send)


class SseAhead:
    """Starlette middleware, inside SecurityHeaders: serves GET /sse ahead of the exception layer
    and the router.

    A reader stream lives for hours, and every layer it passes through keeps a coroutine frame
    alive for all that time: Starlette's router and exception middleware cost about 2.5 KiB per
    idle reader, for nothing a stream uses (as /ws, service/ws.py ReaderSocketDispatch). Like
    SecurityHeaders, this layer returns the awaitable it is given and keeps no frame of its own.
    A refusal is answered here as the application's ApiError handler would (a JSON error, with
    the CORS headers of an allowed origin, service/app.py); any other exception goes on to
    Starlette's error layer, whose 500 has the security headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http" or scope["path"] != "/sse" or scope["method"] != "GET":
            return self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            stream = sse_endpoint(request)
        except ApiError as exc:
            response = exc.response()
            origins: OriginPolicy = request.app.state.origins
            response.headers.update(origins.cors_headers(request))
            return response(scope, receive, send)
        return stream(receive, send)


routes = [Route("/sse", SseEndpoint(), methods=["GET"])]
