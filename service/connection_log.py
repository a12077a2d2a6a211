"""One log line per reader connection (WebSocket /ws and SSE /sse), written when it ends.

A reader connection lives for minutes or hours; what an operator wants to know about it is
one record at its end: who (client address), how (protocol), what (editions and filter from
the URL query), for how long, and how it ended (close code and reason, and which side closed;
or the HTTP status and whether the client left). uvicorn's own lines for these connections
(its access line, the handshake's "[accepted]", websockets' "connection open" / "connection
closed") are filtered out by `silence_server_lines`, so this is the only one; every other
HTTP request keeps uvicorn's access line.

`ReaderConnectionLog` is a thin ASGI layer: it watches the few messages that tell this story
(accept, close, response start, disconnect) and nothing else. Frames written straight to the
socket by the hub (service/wire.py) never pass through ASGI and are not touched; the frames
that do (catch-up, SSE) cost one extra function call each.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

READER_PATHS = {("websocket", "/ws"): "ws", ("http", "/sse"): "sse"}
_READER_PATH_NAMES = frozenset(path for _, path in READER_PATHS)
_WATCHED = frozenset(
    {"websocket.accept", "websocket.close", "websocket.http.response.start", "http.response.start"}
)
# Filter parameters of the reader URL (docs/protocol.md), summarised in the line.
_QUERY_FIELDS = ("editions", "topics", "min_urgency")
# Client-chosen text (query values, a close reason) is cut to this many characters.
CLIENT_TEXT_MAX = 200


def _printable(text: str) -> str:
    """Client-chosen text made safe for a log line: control and other unprintable characters
    (a newline that would forge a second line, a terminal escape) shown as escapes, and cut."""
    cut = text[:CLIENT_TEXT_MAX]
    if cut.isprintable():
        return cut
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in cut)


def _observing_send(send: Send, observe: Callable[[Message], None]) -> Send:
    """`send` with `observe(message)` called first, still bound to the server's protocol object.

    service/ws.py's ReaderSocketDispatch finds the uvicorn protocol (for direct frame writes and
    for aborting a stuck SSE stream) as `send.__self__`; the wrapper keeps that true. It returns
    the inner send's awaitable instead of awaiting it, so no coroutine is added per frame.
    """

    def observed(_owner: object, message: Message) -> Awaitable[None]:
        observe(message)
        return send(message)

    owner = getattr(send, "__self__", None)
    if owner is None:
        return cast(Send, lambda message: observed(None, message))
    return cast(Send, types.MethodType(observed, owner))


class _Connection:
    """What is known about one reader connection so far."""

    def __init__(self, scope: Scope, protocol: str) -> None:
        self.scope = scope
        self.protocol = protocol
        self.started = time.monotonic()
        self.accepted = False
        self.status: int | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by = ""
        self.error = ""

    def sent(self, message: Message) -> None:
        kind = message["type"]
        if kind not in _WATCHED:
            return
        if kind == "websocket.accept":
            self.accepted = True
        elif kind == "websocket.close":
            if not self.closed_by:
                self.closed_by = "server"
                self.close_code = int(message.get("code", 1000))
                self.close_reason = str(message.get("reason") or "")
            if not self.accepted:
                self.status = 403  # uvicorn answers a close before the handshake with 403
        else:
            self.status = int(message["status"])

    async def received(self, receive: Receive) -> Message:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect" and not self.closed_by:
            # The client closed; or the connection was lost without a close frame (1006: the
            # client vanished, or uvicorn gave up on its pings); or uvicorn is shutting down and
            # closes every connection with 1012 itself.
            self.close_code = int(message.get("code", 1005))
            self.closed_by = {1006: "dropped", 1012: "server"}.get(self.close_code, "client")
            self.close_reason = str(message.get("reason") or "")
        elif kind == "http.disconnect" and not self.closed_by:
            self.closed_by = "client"
        return message

    def fields(self) -> dict[str, Any]:
        """The record's fields (also the keys of its JSON form): `client` ("host:port"),
        `protocol` ("ws" or "sse"), the query's `editions`, `topics` and `min_urgency` when
        given, `duration_s`, `closed_by` ("client", "server" or "dropped"), and, when known,
        `status` (HTTP), `close_code` and `close_reason` (WebSocket), `error` (an exception's
        type that ended the connection)."""
        client = self.scope.get("client")
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        fields: dict[str, Any] = {
            "client": f"{client[0]}:{client[1]}" if client else "-",
            "protocol": self.protocol,
            **{name: _printable(",".join(query[name])) for name in _QUERY_FIELDS if name in query},
            "duration_s": round(time.monotonic() - self.started, 3),
            "closed_by": self.closed_by or "server",
        }
        if self.status is not None:
            fields["status"] = self.status
        if self.close_code is not None:
            fields["close_code"] = self.close_code
            fields["close_reason"] = _printable(self.close_reason)
        if self.error:
            fields["error"] = self.error
        return fields


def describe(fields: dict[str, Any]) -> str:
    """The human-readable line, e.g. "reader connection ws 127.0.0.1:50312 editions=en
    topics=politics lasted 12.301s: closed by client, 1000 ''"."""
    parts = [fields["protocol"], fields["client"]]
    parts += [f"{name}={fields[name]}" for name in _QUERY_FIELDS if name in fields]
    ending = f"closed by {fields['closed_by']}"
    if "status" in fields:
        ending += f", HTTP {fields['status']}"
    if "close_code" in fields:
        ending += f", {fields['close_code']} {fields['close_reason']!r}"
    if "error" in fields:
        ending += f", error {fields['error']}"
    return f"reader connection {' '.join(parts)} lasted {fields['duration_s']}s: {ending}"


class ReaderConnectionLog:
    """The outermost ASGI layer: logs one INFO line per /ws and /sse connection when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = READER_PATHS.get((scope["type"], scope.get("path", "")))
        if protocol is None:
            await self.app(scope, receive, send)
            return
        connection = _Connection(scope, protocol)

        async def observed_receive() -> Message:
            return await connection.received(receive)

        try:
            await self.app(scope, observed_receive, _observing_send(send, connection.sent))
        except BaseException as exc:
            connection.error = type(exc).__name__
            raise
        finally:
            fields = connection.fields()
            log.info(describe(fields), extra=fields)


# What uvicorn (and websockets, through uvicorn's logger) says about a WebSocket handshake and its
# connection; matched on the format string, so nothing is formatted to be dropped.
_WEBSOCKET_LINES = frozenset(
    {'%s - "WebSocket %s" [accepted]', '%s - "WebSocket %s" 403', '%s - "WebSocket %s" %d'}
)
_CONNECTION_LINES = frozenset({"connection open", "connection closed", "connection rejected (%d %s)"})


def _reader_path(path_with_query: object) -> bool:
    return isinstance(path_with_query, str) and path_with_query.partition("?")[0] in _READER_PATH_NAMES


class ServerLinesFilter(logging.Filter):
    """Drops uvicorn's lines about reader connections (ReaderConnectionLog writes the one line).

    On "uvicorn.access": the access line of /sse (and /ws) requests, whose arguments are
    (client, method, path with query, HTTP version, status). On "uvicorn.error": the handshake
    lines of /ws ('"WebSocket /ws?..." [accepted]'), and websockets' "connection open" /
    "connection closed" / "connection rejected" (only WebSocket connections have them).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _CONNECTION_LINES:
            return False
        args = record.args
        if not isinstance(args, tuple):
            return True
        if record.msg in _WEBSOCKET_LINES and len(args) >= 2:
            return not _reader_path(args[1])
        if record.name == "uvicorn.access" and len(args) >= 3:
            return not _reader_path(args[2])
        return True


def silence_server_lines() -> None:
    """Install `ServerLinesFilter` on uvicorn's loggers (call once, before the server starts)."""
    line_filter = ServerLinesFilter()
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(line_filter)
