"""WebSocket frames written straight to a connection's transport, once encoded for everyone.

After a reader has caught up, the hub hands each live event to its socket as
the same pre-encoded frame bytes for every subscriber (a server frame is never
masked, so all copies are identical) with one `transport.write`, the way
websockets' broadcast() does, instead of one ASGI `send` per subscriber. This
only engages under uvicorn's websockets-sansio protocol, whose connection state
we can read; anything else keeps the ASGI path. A reader whose unsent bytes
exceed the limit is treated as too slow, exactly like an outbox overflow.

When one Redis read brings several events, the hub writes all of a reader's frames of that
round with one `write` (service/hub.py): a writer's `encoding` turns the events into the bytes
to write, once for every writer that frames them identically (`WEBSOCKET` here; SSE has its own).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from flashwire.core.protocol import HEARTBEAT_FRAME, PONG_FRAME

if TYPE_CHECKING:
    from flashwire.service.events import Event

WS_TEXT = 0x81  # FIN + text opcode

OPEN, CLOSED, SLOW = 0, 1, 2


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (what a server sends)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", WS_TEXT, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", WS_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", WS_TEXT, 127, length)
    return header + payload


# The fixed frames, encoded once for every connection.
HEARTBEAT_WIRE = text_frame(HEARTBEAT_FRAME.encode())
PONG_WIRE = text_frame(PONG_FRAME.encode())


class Encoding(Protocol):
    """How a kind of direct writer frames events: hashable, one object shared by every writer
    that frames them identically, so that the hub encodes a round's events once per filter."""

    def heartbeat(self, positions: Mapping[str, str]) -> bytes:
        """What the hub's heartbeat loop writes, given its position of every edition (edition ->
        cursor text): SSE puts them in the heartbeat's id (docs/protocol.md section 15)."""
        ...

    def encode(self, events: Sequence[Event], positions: Mapping[str, str]) -> bytes:
        """The bytes to write for `events`, in order, all of one edition. `positions` is the hub's
        cursor of every other edition at the dispatch (edition -> cursor text); each event's own
        edition is at `event.cursor`."""
        ...


class Writer(Protocol):
    """A connection the hub writes to directly once its reader has caught up."""

    @property
    def encoding(self) -> Encoding:
        """How to frame events for it."""
        ...

    @property
    def backlog_ok(self) -> bool:
        """Is little enough still unsent for direct writes to start?"""
        ...

    def write(self, data: bytes) -> int:
        """Write `data`: OPEN if written, CLOSED if the connection is closing, SLOW if backed up."""
        ...


class WebSocketEncoding:
    """How every WebSocket reader is sent events: each event's pre-encoded frame (`Event.wire`),
    back to back. One instance (`WEBSOCKET`) is shared by every `DirectWriter`, so the hub encodes
    a round's events once per filter and writes the same bytes to all of its readers."""

    __slots__ = ()

    def heartbeat(self, positions: Mapping[str, str]) -> bytes:
        """The heartbeat frame; a WebSocket heartbeat carries no cursor."""
        return HEARTBEAT_WIRE

    def encode(self, events: Sequence[Event], positions: Mapping[str, str]) -> bytes:
        """The frames of `events`, in order. `positions` (the other editions' cursors, which SSE
        puts in its event ids) plays no part in a WebSocket frame."""
        if len(events) == 1:
            return events[0].wire
        return b"".join([event.wire for event in events])


WEBSOCKET = WebSocketEncoding()


class DirectWriter:
    """Writes whole frames to one uvicorn websockets-sansio connection."""

    __slots__ = ("_limit", "_protocol", "_transport")

    # How the hub frames events for this writer (see WebSocketEncoding).
    encoding = WEBSOCKET

    def __init__(self, protocol: Any, limit_bytes: int) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._limit = limit_bytes

    @classmethod
    def for_protocol(cls, protocol: Any, limit_bytes: int) -> DirectWriter | None:
        """A writer if `protocol` is one whose state we know how to respect, else None."""
        # By name, so that uvicorn's module is not imported for it; subclasses (the node's own,
        # service/ws_protocol.py) keep its state.
        if not any(cls.__name__ == "WebSocketsSansIOProtocol" for cls in type(protocol).__mro__):
            return None
        if not all(hasattr(protocol, name) for name in ("transport", "close_sent", "handshake_complete")):
            return None
        return cls(protocol, limit_bytes)

    @property
    def backlog_ok(self) -> bool:
        """Is little enough still unsent (a snapshot, say) for direct writes to start?"""
        return bool(self._transport.get_write_buffer_size() <= self._limit // 2)

    def write(self, data: bytes) -> int:
        """Write whole frames (one, or a round's several): OPEN if written, CLOSED if the connection
        is closing, SLOW if backed up."""
        transport = self._transport
        if self._protocol.close_sent or transport.is_closing():
            return CLOSED
        if transport.get_write_buffer_size() > self._limit:
            return SLOW
        transport.write(data)
        return OPEN
