"""One log line per reader connection (WebSocket /ws and SSE /sse), written when it ends.

A reader connection lives for minutes or hours; what an operator wants to know about it is
one record at its end: who (client address), how (protocol), what (editions and filter), for
how long, and how it ended (close code and reason, and which side closed; or the HTTP status).
The endpoints write it themselves where the connection already ends (service/ws.py's
`ticker_endpoint`, service/sse.py's `ReaderStream`), from what they know anyway: nothing is
kept per connection for the log but its start time. A connection refused before it streams
(WebSocket 1013 or 4400 before `subscribed`, SSE 400, 403, 429 or 503) gets its line too. A
connection the node's WebSocket protocol ended on its own (service/ws_protocol.py: a keepalive
ping not answered in time, too many pings) says so: `closed by server, 1011 "keepalive ping
timeout"`, `closed by server, 1008 "too many pings: …"`.

uvicorn's own lines for these connections (its access line, the handshake's "[accepted]",
websockets' "connection open" / "connection closed") are filtered out by `silence_server_lines`,
so this is the only one; every other HTTP request keeps uvicorn's access line.

The text line quotes every value a client chose (the query's editions, topics and min_urgency;
a close reason), so that a value cannot make the line read as if it ended differently:

    reader connection ws 127.0.0.1:50312 editions="en" topics="politics" min_urgency="urgent"
    lasted 12.301s: closed by client, 1000 ""

The JSON format (flashwire/core/logs.py) has the same fields as keys of their own.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from starlette.types import Scope

from flashwire.core.lines import URGENCY_RANK
from flashwire.service.subscription import Subscription

log = logging.getLogger(__name__)

READER_PATHS = frozenset({"/ws", "/sse"})
# Filter parameters of the reader URL (docs/protocol.md), summarised in the line.
_QUERY_FIELDS = ("editions", "topics", "min_urgency")
# Client-chosen text (query values, a close reason) is cut to this many characters.
CLIENT_TEXT_MAX = 200
_URGENCY_NAMES = {rank: name for name, rank in URGENCY_RANK.items()}


class Ending(NamedTuple):
    """How a reader connection ended, made once, when it ends.

    `closed_by` is "client", "server" or "dropped" (lost without a close frame); `close_code`
    and `close_reason` are the WebSocket close (RFC 6455 §7.1.5, §7.1.6); `status` is the HTTP
    status of an SSE response; `reason` says why the server ended an SSE stream; `error` is the
    type name of an exception that ended the connection.
    """

    closed_by: str
    close_code: int | None = None
    close_reason: str = ""
    status: int | None = None
    reason: str = ""
    error: str = ""

    @classmethod
    def of_disconnect(cls, code: int, reason: str = "") -> Ending:
        """The ending told by a `websocket.disconnect` (ASGI): the client closed; or the connection
        was lost without a close frame (1006: the client vanished); or uvicorn is shutting down and
        closes every connection with 1012 itself."""
        closed_by = {1006: "dropped", 1012: "server"}.get(code, "client")
        return cls(closed_by, code, reason)

    @classmethod
    def of_failure(cls, code: int, reason: str) -> Ending:
        """The node's WebSocket protocol ended the connection itself (service/ws_protocol.py
        `failed`): no pong to its keepalive ping in time (1011 "keepalive ping timeout"), or too many
        pings from the client (1008). The application hears of it as a disconnect, which would
        otherwise read as the client's close."""
        return cls("server", code, reason)


def _escaped(ch: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    return ch if ch.isprintable() else ch.encode("unicode_escape").decode()


def quoted(text: str) -> str:
    """Client-chosen text as one double-quoted token of a log line: cut to CLIENT_TEXT_MAX
    characters; backslash and double quote escaped; control, format (a bidi override) and other
    unprintable characters (a newline that would forge a second line, a terminal escape) shown
    as Python escapes. So the token ends at the first unescaped quote, whatever the client sent."""
    return '"' + "".join(_escaped(ch) for ch in text[:CLIENT_TEXT_MAX]) + '"'


def _token(text: str) -> str:
    """`text` as is if it is one plain token (an address "127.0.0.1:50312"), else `quoted`: a
    client address can come from a proxy's X-Forwarded-For header."""
    plain = text and text.isprintable() and not any(ch in text for ch in ' "\\')
    return text if plain else quoted(text)


def _filter_fields(scope: Scope, subscription: Subscription | None) -> dict[str, str]:
    """editions, topics and min_urgency: the subscription's once there is one (it may have come
    by a `subscribe` message), else what the URL query gave (a refused connection)."""
    if subscription is not None:
        fields = {"editions": ",".join(subscription.editions)}
        if subscription.filter.topics:
            fields["topics"] = ",".join(sorted(subscription.filter.topics))
        fields["min_urgency"] = _URGENCY_NAMES[subscription.filter.max_rank]
        return fields
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {name: ",".join(query[name])[:CLIENT_TEXT_MAX] for name in _QUERY_FIELDS if name in query}


def connection_fields(
    protocol: str, scope: Scope, started: float, ending: Ending, subscription: Subscription | None
) -> dict[str, Any]:
    """The record's fields (also the keys of its JSON form): `client` ("host:port"), `protocol`
    ("ws" or "sse"), `editions`, `topics` and `min_urgency` (see _filter_fields), `duration_s`
    (since `started`, a time.monotonic() value), `closed_by`, and, when known, `status`,
    `close_code`, `close_reason`, `reason` and `error` (see Ending)."""
    client = scope.get("client")
    fields: dict[str, Any] = {
        "client": f"{client[0]}:{client[1]}" if client else "-",
        "protocol": protocol,
        **_filter_fields(scope, subscription),
        "duration_s": round(time.monotonic() - started, 3),
        "closed_by": ending.closed_by,
    }
    if ending.status is not None:
        fields["status"] = ending.status
    if ending.close_code is not None:
        fields["close_code"] = ending.close_code
        fields["close_reason"] = ending.close_reason[:CLIENT_TEXT_MAX]
    if ending.reason:
        fields["reason"] = ending.reason
    if ending.error:
        fields["error"] = ending.error
    return fields


def describe(fields: dict[str, Any]) -> str:
    """The text line, e.g. 'reader connection ws 127.0.0.1:50312 editions="en" topics="politics"
    lasted 12.301s: closed by client, 1000 ""' (or '...: dropped, 1006 ""' for a connection lost
    without a close frame). Every client-chosen value is `quoted`."""
    parts = [fields["protocol"], _token(fields["client"])]
    parts += [f"{name}={quoted(fields[name])}" for name in _QUERY_FIELDS if name in fields]
    closed_by = fields["closed_by"]
    ending = "dropped" if closed_by == "dropped" else f"closed by {closed_by}"
    if "status" in fields:
        ending += f", HTTP {fields['status']}"
    if "close_code" in fields:
        ending += f", {fields['close_code']} {quoted(fields['close_reason'])}"
    if "reason" in fields:
        ending += f", {quoted(fields['reason'])}"
    if "error" in fields:
        ending += f", error {fields['error']}"
    return f"reader connection {' '.join(parts)} lasted {fields['duration_s']}s: {ending}"


def log_reader_connection(
    protocol: str, scope: Scope, started: float, ending: Ending, subscription: Subscription | None = None
) -> None:
    """Write the connection's one INFO line (see connection_fields for the arguments)."""
    fields = connection_fields(protocol, scope, started, ending, subscription)
    log.info(describe(fields), extra=fields)


# What uvicorn (and websockets, through uvicorn's logger) says about a WebSocket handshake and its
# connection; matched on the format string, so nothing is formatted to be dropped.
_WEBSOCKET_LINES = frozenset(
    {'%s - "WebSocket %s" [accepted]', '%s - "WebSocket %s" 403', '%s - "WebSocket %s" %d'}
)
_CONNECTION_LINES = frozenset({"connection open", "connection closed", "connection rejected (%d %s)"})


def _reader_path(path_with_query: object) -> bool:
    return isinstance(path_with_query, str) and path_with_query.partition("?")[0] in READER_PATHS


class ServerLinesFilter(logging.Filter):
    """Drops uvicorn's lines about reader connections (the endpoints write the one line).

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
