"""SSE messages written straight to a connection's transport, once encoded for everyone.

The SSE twin of service/wire.py. After a reader of /sse has caught up, the hub hands each
live event to it as bytes encoded once per group of identical readers (same filter, same
editions: `SseEncoding`) and written with one `transport.write`, instead of one ASGI `send`
through the middlewares per reader.

What goes on the wire is what uvicorn would have written for the same ASGI body message: one
HTTP/1.1 chunk (RFC 9112 §7.1, `<hex length>\\r\\n<data>\\r\\n`) holding the SSE messages
(`id: <cursor set>\\ndata: <frame>\\n\\n`, the HTML standard's "Server-sent events"). The id is
the reader's complete cursor set, as service/sse.py sends it on the outbox path: the event's own
edition at the event's cursor, every other edition at the hub's position when it dispatched the
event. A caught-up reader has been given (or filtered out) every event up to that position, so
resuming from it misses nothing, and the id is the same for every reader of the same editions.

This only engages under uvicorn's httptools protocol with a chunked response, whose cycle state
we can read (`cycle.disconnected`, `cycle.response_complete`); anything else (h11, HTTP/1.0, a
HEAD request) keeps the ASGI path. A reader whose unsent bytes exceed the limit is treated as
too slow, exactly like an outbox overflow (the hub calls its `on_overflow`: it is cut off).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from flashwire.core.cursors import cursor_set
from flashwire.core.protocol import HEARTBEAT_FRAME
from flashwire.service.events import Event
from flashwire.service.wire import CLOSED, OPEN, SLOW

# The uvicorn module whose RequestResponseCycle we know the state of (uvicorn 0.3x).
HTTPTOOLS_CYCLE_MODULE = "uvicorn.protocols.http.httptools_impl"


def chunk(data: bytes) -> bytes:
    """One chunk of HTTP/1.1 chunked transfer coding (RFC 9112 §7.1); `data` must not be empty
    (an empty chunk ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def message(frame: str, event_id: str = "") -> str:
    """One SSE message holding `frame` (one line of JSON), with an `id` field unless `event_id`
    is empty: an empty id would reset the browser's Last-Event-ID."""
    return f"id: {event_id}\ndata: {frame}\n\n" if event_id else f"data: {frame}\n\n"


class SseEncoding:
    """How events are framed for the SSE readers of one set of editions: their event id names
    exactly those editions. One instance per set (`encoding_for`), so that the hub can group
    readers by it (hashable by identity)."""

    __slots__ = ("editions",)

    def __init__(self, editions: tuple[str, ...]) -> None:
        self.editions = tuple(sorted(editions))

    def heartbeat(self, positions: Mapping[str, str]) -> bytes:
        """A heartbeat with the reader's complete cursor set as its id, like every message after
        `subscribed` (docs/protocol.md section 15, the `id` rule): every edition at the hub's
        position, which a caught-up reader has been given, or had filtered out, all of. The hub
        never sends one in the middle of a dispatch round (Hub._heartbeat_loop)."""
        cursors = {edition: positions[edition] for edition in self.editions}
        return chunk(message(HEARTBEAT_FRAME, cursor_set(cursors)).encode())

    def encode(self, events: Sequence[Event], positions: Mapping[str, str]) -> bytes:
        """One chunk with the SSE message of each event, in order. `positions`: the hub's cursor
        of every other edition (edition -> cursor text) when it dispatched these events; the
        events' own edition is at each event's cursor."""
        cursors = {edition: positions[edition] for edition in self.editions if edition in positions}
        parts = []
        for event in events:
            cursors[event.edition] = event.cursor
            parts.append(message(event.frame, cursor_set(cursors)))
        return chunk("".join(parts).encode())

    def __repr__(self) -> str:
        return f"SseEncoding({','.join(self.editions)})"


@functools.cache
def encoding_for(editions: frozenset[str]) -> SseEncoding:
    """The one encoding of this set of editions (a handful of sets exist: cached for good)."""
    return SseEncoding(tuple(editions))


class SseWriter:
    """Writes whole chunks to one uvicorn httptools response (`cycle`, its RequestResponseCycle)."""

    __slots__ = ("_cycle", "_limit", "_transport", "encoding")

    def __init__(self, cycle: Any, encoding: SseEncoding, limit_bytes: int) -> None:
        self._cycle = cycle
        self._transport = cycle.transport
        self._limit = limit_bytes
        self.encoding = encoding

    @classmethod
    def for_cycle(cls, cycle: Any, encoding: SseEncoding, limit_bytes: int) -> SseWriter | None:
        """A writer if `cycle` is an httptools response under way in chunked coding, else None.

        Call it once the response has started (its headers are out): only then does uvicorn
        know whether it frames the body in chunks (not for HTTP/1.0, nor for a HEAD request).
        """
        # By module and name, so that uvicorn's module is not imported for it: h11's cycle has
        # the same name, but its state machine frames the body itself (it keeps the ASGI path).
        kind = type(cycle)
        if kind.__module__ != HTTPTOOLS_CYCLE_MODULE or kind.__name__ != "RequestResponseCycle":
            return None
        if not all(hasattr(cycle, name) for name in ("transport", "disconnected", "response_complete")):
            return None
        if getattr(cycle, "chunked_encoding", None) is not True or not cycle.response_started:
            return None
        return cls(cycle, encoding, limit_bytes)

    @property
    def backlog_ok(self) -> bool:
        """Is little enough still unsent (a snapshot, say) for direct writes to start?"""
        return bool(self._transport.get_write_buffer_size() <= self._limit // 2)

    def write(self, data: bytes) -> int:
        """Write one chunk: OPEN if written, CLOSED if the response is over, SLOW if backed up."""
        cycle, transport = self._cycle, self._transport
        if cycle.disconnected or cycle.response_complete or transport.is_closing():
            return CLOSED
        if transport.get_write_buffer_size() > self._limit:
            return SLOW
        transport.write(data)
        return OPEN
