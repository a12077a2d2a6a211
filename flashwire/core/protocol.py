"""The reader protocol (docs/protocol.md, version 1) in one place: message types, close codes,
the fixed frames, and a pydantic model of every message a reader receives or sends.

The service (service/ws.py, sse.py, delivery.py, events.py, history.py), the Python client
(flashwire/client.py) and the AsyncAPI document (service/asyncapi.py) all take their names
and numbers from here. The models describe the frames; they are not on the hot path: the
hub sends each event as one pre-serialised frame (service/events.py) and never validates
per delivery. tests/test_protocol_frames.py checks real frames against these models' schemas,
closed to the fields they list (tests/protocol_schemas.py).

Server -> reader, over WebSocket (one JSON object per text frame) and SSE (one `data:` line
per event): `hello`, `subscribed`, `snapshot`, `line`, `update`, `retract`, `heartbeat`,
and, over WebSocket only, `pong`. Reader -> server, over WebSocket only: `subscribe`, `ping`.
"""

from __future__ import annotations

import functools
from enum import IntEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from flashwire.core.cursors import CURSOR_PATTERN
from flashwire.core.models import Line, Urgency
from flashwire.core.settings import Settings

PROTOCOL_VERSION: Final = 1

# Message types (the `type` field).
HELLO: Final = "hello"
SUBSCRIBED: Final = "subscribed"
SNAPSHOT: Final = "snapshot"
LINE: Final = "line"
UPDATE: Final = "update"
RETRACT: Final = "retract"
HEARTBEAT: Final = "heartbeat"
PONG: Final = "pong"
SUBSCRIBE: Final = "subscribe"
PING: Final = "ping"
# Who holds a connection (the subscription's `role`, docs/protocol.md 2.4): a `reader` counts in
# reach and in the readers online; a `desk` (the newsroom's own desk page following its ticker)
# is counted apart, in neither.
READER: Final = "reader"
DESK: Final = "desk"
ROLES: Final = (READER, DESK)
ConnectionRole = Literal["reader", "desk"]
# Events that carry a cursor and move a reader's position (docs/protocol.md 8.2).
LIVE_TYPES = frozenset({LINE, UPDATE, RETRACT})
EVENT_TYPES = LIVE_TYPES | {SNAPSHOT}

# Pings a client may send on a connection, WebSocket protocol pings, unsolicited pongs and `ping`
# messages together: PING_BURST at once, then PINGS_PER_S a second; over it the node closes with
# 1008 and TOO_MANY_PINGS (docs/protocol.md section 12; service/ws_protocol.py).
PING_BURST: Final = 10
PINGS_PER_S: Final = 1.0
TOO_MANY_PINGS: Final = "too many pings: at most 10 at once and 1 a second after that"

# The two frames that never change, serialised once.
HEARTBEAT_FRAME = '{"type":"heartbeat"}'
PONG_FRAME = '{"type":"pong"}'


class CloseCode(IntEnum):
    """WebSocket close codes Flashwire uses (docs/protocol.md section 10; RFC 6455 7.4, and the
    4000-4999 range for applications)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    SLOW_CONSUMER = 4001
    BAD_REQUEST = 4400
    FORBIDDEN_ORIGIN = 4403
    SUBSCRIBE_TIMEOUT = 4408


# Closes after which reconnecting with the same request cannot help (docs/protocol.md 11).
FATAL_CLOSE_CODES = frozenset(
    {
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.BAD_REQUEST,
        CloseCode.FORBIDDEN_ORIGIN,
        CloseCode.SUBSCRIBE_TIMEOUT,
    }
)

# HTTP answers to a WebSocket upgrade (or to /sse) after which a client waits at least the longer
# wait of docs/protocol.md 11, honouring Retry-After: the node (or a proxy) cannot serve it now.
TRY_LATER_STATUSES = frozenset({429, 503})
# HTTP answers after which asking again with the same request cannot help: it is malformed or too
# large (400, 414, 431: the connection edge, service/server_limits.py), not allowed (403), or
# asks for what does not exist (404) (docs/protocol.md 11).
FATAL_STATUSES = frozenset({400, 403, 404, 414, 431})

Cursor = Annotated[
    str,
    Field(
        pattern=f"^{CURSOR_PATTERN}$",
        description="A ticker position, a Redis stream id '<ms>-<seq>' (flashwire/core/cursors.py); "
        "compare as two integers, never as strings.",
        examples=["1795625033442-0"],
    ),
]
Edition = Annotated[str, Field(description="Edition code (BCP 47), e.g. 'en'.", examples=["en"])]


class _Message(BaseModel):
    """A protocol message. Its schema is open, as the protocol is: readers must ignore fields they
    do not know, which later versions of protocol 1 may add, and the server ignores unknown fields
    of a client's message (docs/protocol.md 1 and 2.2); the line inside
    (flashwire/core/models.py) is open in the same way. What the published schema promises is the
    fields it lists; the tests that validate real frames close every object of it
    (tests/protocol_schemas.py), so a frame that drifted from its description still fails them."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Hello(_Message):
    """The greeting, always the first message (4.1)."""

    type: Literal["hello"]
    protocol: Literal[1] = Field(description="Protocol version (PROTOCOL_VERSION).")
    node: str = Field(description="The service node holding this connection (for diagnostics).")
    heartbeat_s: float = Field(gt=0, description="Seconds between heartbeats; dead after 2.5 x this.")
    editions: list[Edition] = Field(description="Every edition the server offers.")
    topics: list[str] = Field(
        description="Every topic (section or region slug) a filter may name, sorted; a client can "
        "check its filters against it (a shared subscription may not carry every client's topics)."
    )


class Subscribed(_Message):
    """The subscription as the server understood it (4.2)."""

    type: Literal["subscribed"]
    editions: list[Edition] = Field(description="Subscribed editions, without duplicates.")
    topics: list[str] = Field(description="The topic filter, sorted; empty for none.")
    min_urgency: Urgency
    resuming: list[Edition] = Field(description="Editions given a cursor, sorted.")
    role: Literal["desk"] | SkipJsonSchema[None] = Field(
        default=None,
        description="Present only on a desk connection (role desk), which counts in neither reach nor "
        "the readers online (2.4).",
    )


class Snapshot(_Message):
    """The live lines of one edition and the cursor they stand at (4.3)."""

    type: Literal["snapshot"]
    edition: Edition
    cursor: Cursor
    reset: bool = Field(description="True if a cursor could not be resumed or the ticker's history changed.")
    lines: list[Line] = Field(description="Matching live lines: pinned first, then newest first.")
    reason: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Present only on a reset snapshot: why the reader could not resume.",
        examples=["cursor is older than the retained log"],
    )


class LineEvent(_Message):
    """A new line (4.4)."""

    type: Literal["line"]
    edition: Edition
    cursor: Cursor
    line: Line


class Previous(BaseModel):
    """A corrected line's filter fields before the correction."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    topics: list[str]
    urgency: Urgency


class UpdateEvent(_Message):
    """A correction, a pin, an unpin or a change of expiry (4.5)."""

    type: Literal["update"]
    edition: Edition
    cursor: Cursor
    change: str = Field(
        description="correction, pin, unpin or expiry; treat an unknown value as a generic change.",
        examples=["correction", "pin", "unpin", "expiry"],
    )
    line: Line
    previous: Previous | SkipJsonSchema[None] = Field(default=None, description="Corrections only.")


class RetractEvent(_Message):
    """A kill, an expiry, or a withdrawal from this reader's filter (4.6)."""

    type: Literal["retract"]
    edition: Edition
    cursor: Cursor
    id: str = Field(description="The line to remove.")
    reason: str = Field(
        description="killed, expired or filtered; treat an unknown value like filtered.",
        examples=["killed", "expired", "filtered"],
    )
    note: str = Field(description="The editor's public reason for a kill; '' otherwise.")
    line: Line


class Heartbeat(_Message):
    """Sent every `heartbeat_s` seconds (4.7)."""

    type: Literal["heartbeat"]


class Pong(_Message):
    """The answer to a `ping`, after everything queued before it (4.8); WebSocket only."""

    type: Literal["pong"]


class Subscribe(_Message):
    """The subscription, as the first client message when the URL has none (2.2); WebSocket only.

    The server validates it by hand (service/subscription.py) so that a 4400's reason names the
    field; this model describes it."""

    type: Literal["subscribe"]
    editions: list[Edition] | None = Field(default=None, description="Null, missing or [] = every edition.")
    topics: list[str] = Field(default_factory=list, description="A line matches if it has any of them.")
    min_urgency: Urgency | None = None
    since: dict[Edition, Cursor] | str | None = Field(
        default=None,
        description="Resume cursors: {edition: cursor}, or the query syntax 'en:<cursor>,ar:<cursor>'.",
    )
    role: ConnectionRole = Field(
        default="reader",
        description="reader (the default), or desk: the newsroom's desk page, counted in neither "
        "reach nor the readers online (2.4).",
    )


class Ping(_Message):
    """Asks for a `pong` (6); WebSocket only."""

    type: Literal["ping"]


# Every message a server sends, by type, in the order of docs/protocol.md section 4.
SERVER_MESSAGES: dict[str, type[_Message]] = {
    HELLO: Hello,
    SUBSCRIBED: Subscribed,
    SNAPSHOT: Snapshot,
    LINE: LineEvent,
    UPDATE: UpdateEvent,
    RETRACT: RetractEvent,
    HEARTBEAT: Heartbeat,
    PONG: Pong,
}
CLIENT_MESSAGES: dict[str, type[_Message]] = {SUBSCRIBE: Subscribe, PING: Ping}
# SSE carries the server messages except `pong` (a stream has no client messages).
SSE_MESSAGES = tuple(name for name in SERVER_MESSAGES if name != PONG)


@functools.lru_cache(maxsize=8)
def hello_frame(settings: Settings) -> str:
    """The `hello` message of a node as JSON text: the same for every connection, made once."""
    hello = Hello(
        type=HELLO,
        protocol=PROTOCOL_VERSION,
        node=settings.node_name,
        heartbeat_s=settings.heartbeat_s,
        editions=list(settings.editions),
        topics=sorted(settings.topics),
    )
    return hello.model_dump_json()
