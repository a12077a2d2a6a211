"""The reader WebSocket endpoint `/ws`: greeting, snapshot or replay, then live events.

Each connection runs its receive loop (client messages, disconnects) in its own
task, and a sender task that drains the subscriber's outbox until the reader has
caught up and the hub writes to its socket directly (service/wire.py). The hub
only ever appends to the outbox, so a slow connection slows nobody else; when its
outbox overflows the sender is cancelled and the connection is closed with
`SLOW_CONSUMER`. An idle reader keeps as little as it can (docs/architecture.md,
"What an idle reader holds").

What a client may send is bounded: one subscribe message, then only pings. A `{"type":"ping"}`
draws on the connection's ping budget, shared with its protocol pings (service/ws_protocol.py
`PingBudget`: 10 at once, then 1 a second); over it the connection is closed with 1008, policy
violation. Any other message closes it with 4400, so a client cannot make the node do work by
sending messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from flashwire.core.protocol import PING, PONG_FRAME, SUBSCRIBE, TOO_MANY_PINGS, CloseCode, hello_frame
from flashwire.core.settings import Settings
from flashwire.service.client_addresses import client_address, per_client_reason
from flashwire.service.connection_log import Ending, log_reader_connection
from flashwire.service.delivery import Delivery
from flashwire.service.hub import Hub
from flashwire.service.metrics import EdgeCounts, edge_counts_of
from flashwire.service.origins import OriginPolicy
from flashwire.service.subscription import Subscription, SubscriptionError, from_message, from_query
from flashwire.service.wire import PONG_WIRE, DirectWriter
from flashwire.service.ws_protocol import PingBudget

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT_S = 10.0
PROTOCOL_SCOPE_KEY = "flashwire.protocol"
STORE_UNAVAILABLE = "the store is unavailable; retry later"
# Redis failures that mean "try again later", not a bug in this connection.
STORE_ERRORS = (RedisConnectionError, RedisTimeoutError)


class _Closing(Exception):
    """Ends a session with a close code and reason."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def ticker_endpoint(websocket: WebSocket) -> None:
    """ASGI entry for /ws. Writes the connection's one log line when it ends, however it ends
    (service/connection_log.py). All it keeps for that while the reader is connected are locals
    of this frame: the start time, the subscription and, at the end, how it ended."""
    started = time.monotonic()
    subscription: Subscription | None = None
    ending = Ending("server")
    try:
        hub: Hub = websocket.app.state.hub
        settings: Settings = websocket.app.state.settings
        await websocket.accept()
        address = client_address(websocket.scope)
        refusal = _refusal(websocket, hub, settings, address)
        if refusal is not None:
            ending = await _close(websocket, *refusal)
            return
        _shed_handshake_state(websocket)
        # Counted from here (no await since the checks) until the connection ends, however it ends.
        hub.connections += 1
        hub.clients.add(address)
        try:
            await websocket.send_text(hello_frame(settings))
            # Parsed here rather than through `websocket.query_params`, which would keep it.
            subscription = from_query(settings, QueryParams(websocket.scope["query_string"]))
            if subscription is None:
                subscription = await _await_subscribe(websocket, settings)
            if not hub.ready:
                # Refused before `subscribed`, so that no client takes this for a working connection.
                raise _Closing(CloseCode.TRY_AGAIN_LATER, STORE_UNAVAILABLE)
            ending = await ReaderSession(websocket, hub, settings, subscription).run()
        except SubscriptionError as exc:
            ending = await _close(websocket, CloseCode.BAD_REQUEST, str(exc))
        except _Closing as closing:
            if closing.code == CloseCode.TRY_AGAIN_LATER:
                log.warning("reader refused (1013): %s", closing.reason)
            ending = await _close(websocket, closing.code, closing.reason)
        except WebSocketDisconnect as exc:
            ending = Ending.of_disconnect(exc.code, exc.reason or "")
        except OSError:
            ending = Ending.of_disconnect(1006)
        except RuntimeError:
            # uvicorn refuses sends on a connection its protocol has failed (service/ws_protocol.py:
            # pings sent before the handshake was answered, say); the ending is the protocol's.
            if getattr(websocket.scope.get(PROTOCOL_SCOPE_KEY), "failed", None) is None:
                raise
        finally:
            hub.connections -= 1
            hub.clients.remove(address)
    except BaseException as exc:
        ending = ending._replace(error=type(exc).__name__)
        raise
    finally:
        failed = getattr(websocket.scope.get(PROTOCOL_SCOPE_KEY), "failed", None)
        if failed is not None:
            # The protocol layer ended it (keepalive timeout, too many pings): the application was
            # told only that the connection went (service/ws_protocol.py).
            ending = Ending.of_failure(*failed)._replace(error=ending.error)
        log_reader_connection("ws", websocket.scope, started, ending, subscription)


def _refusal(
    websocket: WebSocket, hub: Hub, settings: Settings, address: str
) -> tuple[CloseCode, str] | None:
    """Why this connection is not served at all (before the hello), or None: a foreign origin, the
    limit of connections from one client address (service/client_addresses.py), or the node's."""
    origins: OriginPolicy = websocket.app.state.origins
    if not origins.allows(websocket):
        return CloseCode.FORBIDDEN_ORIGIN, f"origin not allowed: {websocket.headers.get('origin')}"
    if hub.clients.full(address):
        edge_counts_of(websocket.app).reader_refused_per_client("ws")
        return CloseCode.TRY_AGAIN_LATER, per_client_reason(settings.max_connections_per_client)
    if hub.connections >= settings.max_connections:
        return CloseCode.TRY_AGAIN_LATER, "connection limit reached; retry later"
    return None


def fit_close_reason(reason: str) -> str:
    """A close reason must fit in 123 bytes of UTF-8; cut on a character boundary."""
    return reason.encode()[:123].decode(errors="ignore")


async def _close(websocket: WebSocket, code: CloseCode, reason: str) -> Ending:
    """Close with a code; a peer that stopped reading gets one heartbeat period, then is cut off.
    Returns the ending, for the connection's log line."""
    settings: Settings = websocket.app.state.settings
    ending = Ending("server", int(code), fit_close_reason(reason))
    try:
        await asyncio.wait_for(websocket.close(int(code), ending.close_reason), settings.heartbeat_s)
        return ending
    except TimeoutError:
        pass
    except Exception:
        return ending
    # The close frame cannot get out because the peer does not read. ASGI has no way to abort a
    # connection, and uvicorn would keep it (and its buffer) until the kernel gives up, so
    # drop the TCP connection ourselves.
    protocol = websocket.scope.get(PROTOCOL_SCOPE_KEY)
    transport = getattr(protocol, "transport", None)
    if transport is not None:
        transport.abort()
    return ending._replace(reason="the peer did not read the close frame; connection aborted")


def _shed_handshake_state(websocket: WebSocket) -> None:
    """Drop the handshake's headers, which the connection would otherwise keep for its whole life.

    Nothing reads them once the connection is accepted and checked (origin, client address):
    uvicorn's handshake request and response (about 4 KiB with their headers), and the scope's
    list of headers with Starlette's view of it (about 1 KiB). The connection's log line needs
    only the scope's client and query string (service/connection_log.py).
    """
    protocol: Any = websocket.scope.get(PROTOCOL_SCOPE_KEY)
    sansio = any(cls.__name__ == "WebSocketsSansIOProtocol" for cls in type(protocol).__mro__)
    if sansio and getattr(protocol, "handshake_complete", False):
        protocol.request = None
        protocol.response = None
    websocket.scope["headers"] = []
    vars(websocket).pop("_headers", None)


class ReaderSocketDispatch:
    """The outermost ASGI layer: serves /ws directly and passes everything else to Starlette.

    A reader connection lives for hours, and every layer it passes through keeps a coroutine
    frame alive for all that time: Starlette's router and exception middleware cost about
    4 KiB per idle reader, for nothing a reader socket uses. The endpoint is still a Starlette
    WebSocket endpoint. This layer also keeps the server protocol in the scope: `_close` may
    need to abort its transport, and the hub writes frames to it directly (service/wire.py).

    It holds the application's `edge_counts` (service/metrics.py), where uvicorn's protocol classes
    find them (their `config.app` is this layer), also kept as the Starlette application's
    `state.edge_counts` for the endpoints and /metrics.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.edge_counts = EdgeCounts()
        state = getattr(app, "state", None)
        if state is not None:
            state.edge_counts = self.edge_counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self.app
            scope[PROTOCOL_SCOPE_KEY] = getattr(send, "__self__", None)
            await ticker_endpoint(WebSocket(scope, receive, send))
            return
        if scope["type"] == "http" and scope["path"] == "/sse":
            # An SSE reader that stops reading must be cut off (service/sse.py): keep the handle.
            scope[PROTOCOL_SCOPE_KEY] = getattr(send, "__self__", None)
        await self.app(scope, receive, send)


async def _await_subscribe(websocket: WebSocket, settings: Settings) -> Subscription:
    try:
        message = await asyncio.wait_for(websocket.receive(), SUBSCRIBE_WAIT_S)
    except TimeoutError:
        raise _Closing(
            CloseCode.SUBSCRIBE_TIMEOUT, "no subscribe message; send one or use the URL query"
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1005), message.get("reason"))
    data = _parse_client_message(message)
    if data.get("type") != SUBSCRIBE:
        raise _Closing(CloseCode.BAD_REQUEST, "type: expected a subscribe message first")
    return from_message(settings, data)


def _parse_client_message(message: MutableMapping[str, Any]) -> dict[str, Any]:
    text = message.get("text")
    if text is None:
        raise _Closing(CloseCode.BAD_REQUEST, "messages must be JSON text frames")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _Closing(CloseCode.BAD_REQUEST, "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Closing(CloseCode.BAD_REQUEST, "message must be a JSON object")
    return data


class ReaderSession:
    """One subscribed WebSocket: a receiver for client messages and a sender of the delivery's frames."""

    def __init__(
        self, websocket: WebSocket, hub: Hub, settings: Settings, subscription: Subscription
    ) -> None:
        self._ws = websocket
        self._hub = hub
        writer = (
            DirectWriter.for_protocol(websocket.scope.get(PROTOCOL_SCOPE_KEY), settings.send_buffer_max_bytes)
            if settings.direct_writes
            else None
        )
        self._delivery = Delivery(
            hub,
            websocket.app.state.reach,
            settings,
            subscription,
            on_overflow=self._overflowed,
            on_reset=self._reset,
            writer=writer,
        )
        self._sender: asyncio.Task[None] | None = None
        self._handler: asyncio.Task[Any] | None = None
        self._stopping = False
        # The connection's ping budget, made at its first ping (see _ping_budget).
        self._pings: PingBudget | None = None

    def _overflowed(self) -> None:
        # Called by the hub, synchronously: stop now (the sender may be blocked on a socket that
        # does not drain, or already gone in direct mode), close from run().
        if self._sender is not None:
            self._sender.cancel()
        self._stop()

    def _reset(self) -> None:
        # Called by the hub, synchronously, after it queued a Reset in the outbox. A reader that
        # was handed over to direct writes has no sender any more: start one to send the reset.
        if self._stopping or self._handler is None:
            return
        if self._sender is not None and not self._sender.done():
            return
        self._start_sender(self._delivery.live())

    def _ping_budget(self) -> PingBudget:
        """The connection's ping budget, shared with its protocol pings when the node runs our
        WebSocket protocol (service/ws_protocol.py), else one of its own; made at the first ping,
        so that an idle reader carries none."""
        if self._pings is None:
            budget = getattr(self._ws.scope.get(PROTOCOL_SCOPE_KEY), "ping_budget", None)
            self._pings = budget() if callable(budget) else PingBudget()
        return self._pings

    def _start_sender(self, frames: AsyncIterator[str]) -> None:
        self._sender = asyncio.create_task(self._send(frames))
        self._sender.add_done_callback(self._sender_done)

    def _stop(self) -> None:
        """End the receive loop, which runs in the connection's own task."""
        if not self._stopping and self._handler is not None:
            self._stopping = True
            self._handler.cancel()

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        # Ending normally after handing over to direct writes is the usual case; any other end
        # (disconnect, overflow, error) ends the connection.
        if self._stopping or sender is not self._sender:
            return  # a sender that a reset already replaced (see _reset)
        if not sender.cancelled() and sender.exception() is None and self._delivery.direct:
            # Let go of the finished task and its coroutine (about 0.8 KiB an idle reader would
            # keep); a reset starts a new one.
            self._sender = None
            return
        self._stop()

    async def run(self) -> Ending:
        """Serve the connection until the client leaves, and say how it did; raises _Closing to
        close with a code.

        The receive loop runs in the connection's own task (one task fewer per idle reader);
        the sender is a task of its own only until the reader has caught up.
        """
        self._delivery.register()
        self._handler = asyncio.current_task()
        self._start_sender(self._delivery.frames())
        disconnect: Message | None = None
        try:
            disconnect = await self._receive()
        except asyncio.CancelledError:
            # Our own _stop() is absorbed; a cancellation from outside (server shutdown) is not.
            if not self._stopping or (self._handler is not None and self._handler.uncancel() > 0):
                raise
        finally:
            self._stopping = True
            self._delivery.unregister()
            result: BaseException | None = None
            sender = self._sender
            if sender is not None:
                sender.cancel()
                [result] = await asyncio.gather(sender, return_exceptions=True)
        if self._delivery.overflowed:
            self._hub.stats.slow_closed += 1
            raise _Closing(
                CloseCode.SLOW_CONSUMER, "too slow: outgoing queue overflowed; resume from your cursor"
            )
        if isinstance(result, _Closing | SubscriptionError):
            raise result
        if isinstance(result, STORE_ERRORS):
            raise _Closing(CloseCode.TRY_AGAIN_LATER, STORE_UNAVAILABLE)
        if isinstance(result, BaseException) and not isinstance(
            result, WebSocketDisconnect | OSError | asyncio.CancelledError
        ):
            log.error("reader session failed", exc_info=result)
            raise _Closing(CloseCode.INTERNAL_ERROR, "internal error")
        if disconnect is not None:
            return Ending.of_disconnect(disconnect.get("code", 1005), disconnect.get("reason") or "")
        if isinstance(result, WebSocketDisconnect):
            return Ending.of_disconnect(result.code, result.reason or "")
        if isinstance(result, OSError):
            return Ending.of_disconnect(1006)
        return Ending("server")

    async def _receive(self) -> Message:
        """Client messages until the `websocket.disconnect`, which is returned."""
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return message
            data = _parse_client_message(message)
            kind = data.get("type")
            if kind == PING:
                if not self._ping_budget().take():
                    edge_counts_of(self._ws.app).ping_limit_closed += 1
                    log.warning("reader %s closed (1008): too many pings", _peer(self._ws.scope))
                    raise _Closing(CloseCode.POLICY_VIOLATION, TOO_MANY_PINGS)
                writer = self._delivery.subscriber.writer
                if writer is not None:
                    writer.write(PONG_WIRE)
                else:
                    self._delivery.subscriber.outbox.offer(PONG_FRAME)
            elif kind == SUBSCRIBE:
                raise _Closing(CloseCode.BAD_REQUEST, "type: already subscribed; open a new connection")
            else:
                raise _Closing(CloseCode.BAD_REQUEST, f"type: unknown message type {kind!r}")

    async def _send(self, frames: AsyncIterator[str]) -> None:
        send = self._ws.send_text
        try:
            async for frame in frames:
                await send(frame)
        except RuntimeError:
            # uvicorn refuses sends once it has failed the connection itself (ping timeout).
            raise WebSocketDisconnect(1006) from None


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
