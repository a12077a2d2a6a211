"""The AsyncAPI 3.0 document of the reader protocol, generated from flashwire/core/protocol.py.

Two channels, `/ws` (WebSocket, both directions) and `/sse` (server-sent events, server to
reader only), carry the messages of docs/protocol.md section 4 and 6. Every payload schema
is the JSON Schema pydantic makes of the protocol's models (and of the `Line` inside them),
placed under `components.schemas`, so the document cannot drift from the types the service
and clients share. The subscription's URL query and the SSE `Last-Event-ID` header are
described with the deployment's editions, topics and heartbeat from `settings`.

Spec: AsyncAPI 3.0.0 (https://www.asyncapi.com/docs/reference/specification/v3.0.0); payloads
use its default schema format, a superset of JSON Schema draft 07. tests/test_protocol_asyncapi.py
validates the document against the official JSON Schema of the specification.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from flashwire import __version__
from flashwire.core.cursors import CURSOR_PATTERN
from flashwire.core.protocol import (
    CLIENT_MESSAGES,
    PING_BURST,
    PINGS_PER_S,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    SSE_MESSAGES,
    CloseCode,
)
from flashwire.core.settings import Settings

ASYNCAPI_VERSION = "3.0.0"
_SCHEMAS = "#/components/schemas/{model}"
# One `edition:cursor` pair of a `since` value.
_PAIR = f"[A-Za-z0-9-]+:{CURSOR_PATTERN}"

# What each message is, in a phrase (the models' docstrings give the detail).
_SUMMARIES = {
    "hello": "The greeting: protocol version, node, heartbeat period, editions, topics.",
    "subscribed": "The subscription as the server understood it.",
    "snapshot": "The live lines of one edition and their cursor (reset: true when resuming failed).",
    "line": "A new line.",
    "update": "A correction, pin, unpin or change of expiry of a line.",
    "retract": "A kill, an expiry, or a withdrawal from this reader's filter.",
    "heartbeat": "Sent every heartbeat_s seconds; nothing for 2.5 x heartbeat_s means a dead connection.",
    "pong": "The answer to a ping.",
    "subscribe": "The subscription, as the first message when the URL query has none.",
    "ping": "Asks for a pong.",
}


@functools.cache
def _payload_schemas() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(message type -> payload schema reference, component schemas), made once per process."""
    models = {**SERVER_MESSAGES, **CLIENT_MESSAGES}
    keys, top = models_json_schema(
        [(model, "validation") for model in models.values()], ref_template=_SCHEMAS
    )
    references = {name: keys[(model, "validation")] for name, model in models.items()}
    return references, top.get("$defs", {})


def _query_schema(settings: Settings) -> dict[str, Any]:
    """The subscription's URL query (docs/protocol.md 2.1), with this deployment's values."""
    editions = ", ".join(settings.editions)
    return {
        "type": "object",
        "properties": {
            "editions": {
                "type": "string",
                "description": f"Comma-separated edition codes, of: {editions}. Default: every edition.",
            },
            "edition": {"type": "string", "description": "Alias of `editions` for one edition."},
            "topics": {
                "type": "string",
                "description": "Comma-separated topic slugs; a line matches if it has any of them. "
                f"Of: {', '.join(settings.topics)}.",
            },
            "min_urgency": {"type": "string", "enum": ["flash", "urgent", "routine"], "default": "routine"},
            "since": {
                "type": "string",
                "pattern": f"^(?:{CURSOR_PATTERN}|{_PAIR}(?:,{_PAIR})*)$",
                "description": "Resume cursors, 'en:<cursor>,ar:<cursor>', or a bare cursor for one edition.",
                "examples": ["en:1795625033442-0,ar:1795625033443-0"],
            },
        },
    }


def _message(name: str, reference: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": _SUMMARIES[name],
        "contentType": "application/json",
        "payload": reference,
    }


def _channel_messages(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/messages/{name}"} for name in names}


def _operation(action: str, channel: str, names: tuple[str, ...] | list[str], summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names],
    }


def asyncapi_document(settings: Settings) -> dict[str, object]:
    """The AsyncAPI 3.0.0 document of this deployment's reader protocol, as a JSON-ready dict
    (a fresh copy each call: callers may change it)."""
    references, schemas = _payload_schemas()
    server_names = list(SERVER_MESSAGES)
    client_names = list(CLIENT_MESSAGES)
    host = f"{settings.host}:{settings.port}"
    close_codes = "; ".join(f"{int(code)} {code.name}" for code in CloseCode)
    query = _query_schema(settings)
    document: dict[str, object] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Flashwire reader protocol",
            "version": f"{PROTOCOL_VERSION}.0.0",
            "description": (
                "Breaking-news ticker for readers, over WebSocket and server-sent events. The full "
                "protocol, with ordering, resume and reconnect rules, is docs/protocol.md. Cursors are "
                "Redis stream ids compared as two integers. Readers must ignore message types and "
                f"fields they do not know. Heartbeat period of this deployment: {settings.heartbeat_s:g} s. "
                f"Service version {__version__}."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {"host": host, "protocol": "ws", "description": "A service node (wss behind TLS)."},
            "http": {"host": host, "protocol": "http", "description": "A service node (https behind TLS)."},
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "WebSocket ticker",
                "description": (
                    "One JSON message per text frame, both ways. Subscribe by URL query or by a "
                    "`subscribe` message within 10 s; afterwards a client may only send `ping`, at most "
                    f"{PING_BURST} at once and {PINGS_PER_S:g} a second after that, WebSocket protocol "
                    "pings included (over it: close 1008). "
                    f"Close codes: {close_codes}. A close reason starts with the field at fault. An "
                    "upgrade the node cannot take is answered instead of 101 with a JSON error and "
                    "closed: 400 (malformed), 408 (head too slow), 414 (target too long), 431 (head "
                    "too large); the same request fails the same way again."
                ),
                "servers": [{"$ref": "#/servers/websocket"}],
                "messages": _channel_messages(server_names + client_names),
                "bindings": {"ws": {"method": "GET", "query": query, "bindingVersion": "0.1.0"}},
            },
            "sse": {
                "address": "/sse",
                "title": "Server-sent events ticker",
                "description": (
                    "text/event-stream: each message is one event with exactly one `data:` line "
                    "holding the WebSocket frame. The first event sets `retry: 2000` and carries "
                    "`hello`; every later event has `id`, the reader's cursor set "
                    "('ar:<cursor>,en:<cursor>'), to resume with `Last-Event-ID` (which wins over "
                    "`since`). The subscription is the URL query only. Errors are answered instead "
                    "of the stream as JSON: 400 (field named), 403 (origin), 429 (too many connections "
                    "from the client's address; Retry-After), 503 (Retry-After); and before the "
                    "application, as on /ws: 400, 408, 414, 431."
                ),
                "servers": [{"$ref": "#/servers/http"}],
                "messages": _channel_messages(SSE_MESSAGES),
                "x-query": query,
                "x-headers": {
                    "type": "object",
                    "properties": {
                        "Last-Event-ID": {
                            "type": "string",
                            "description": "The last event id received; resumes every edition in it.",
                        }
                    },
                },
            },
        },
        "operations": {
            "sendTickerOverWebSocket": _operation(
                "send", "ws", server_names, "The node sends the ticker to a WebSocket reader."
            ),
            "receiveReaderMessages": _operation(
                "receive", "ws", client_names, "The node receives a WebSocket reader's subscribe and pings."
            ),
            "sendTickerOverSse": _operation(
                "send", "sse", SSE_MESSAGES, "The node sends the ticker as server-sent events."
            ),
        },
        "components": {
            "schemas": copy.deepcopy(schemas),
            "messages": {
                name: _message(name, dict(references[name])) for name in server_names + client_names
            },
        },
    }
    return document
