"""WebSocket frames written straight to a connection's transport, once encoded for everyone.

After a reader has caught up, the hub hands each live event to its socket as
the same pre-encoded frame bytes for every subscriber (a server frame is never
masked, so all copies are identical) with one `transport.write`, the way
websockets' broadcast() does, instead of one ASGI `send` per subscriber. This
only engages under uvicorn's websockets-sansio protocol, whose connection state
we can read; anything else keeps the ASGI path. A reader whose unsent bytes
exceed the limit is treated as too slow, exactly like an outbox overflow.
"""

from __future__ import annotations

import struct
from typing import Any

from flashwire.core.protocol import HEARTBEAT_FRAME, PONG_FRAME

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


class DirectWriter:
    """Writes whole frames to one uvicorn websockets-sansio connection."""

    __slots__ = ("_limit", "_protocol", "_transport")

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

    def write(self, frame: bytes) -> int:
        """Write one frame: OPEN if written, CLOSED if the connection is closing, SLOW if backed up."""
        transport = self._transport
        if self._protocol.close_sent or transport.is_closing():
            return CLOSED
        if transport.get_write_buffer_size() > self._limit:
            return SLOW
        transport.write(frame)
        return OPEN
