"""What the hub writes to a caught-up SSE reader (service/sse_wire.py): exact bytes, in-process.

The end-to-end tests (tests/test_fast_path.py, test_slow_readers.py, test_history_reset.py) show
that real readers get these bytes; these pin down the framing itself: one HTTP/1.1 chunk
(RFC 9112 §7.1) of SSE messages whose id is the reader's cursor set.
"""

from __future__ import annotations

import orjson

from flashwire.service.events import Event
from flashwire.service.sse_wire import encoding_for


def _event(edition: str, cursor: str, text: str) -> Event:
    body = orjson.dumps({"line": {"id": f"{edition}-{text}", "version": 1, "text": text, "topics": []}})
    return Event.from_entry(edition, cursor, {b"t": b"line", b"d": body})


def _unchunk(data: bytes) -> bytes:
    """The payload of exactly one chunk, checking its framing."""
    size, _, rest = data.partition(b"\r\n")
    assert rest.endswith(b"\r\n") and len(rest) == int(size, 16) + 2
    return rest[:-2]


def test_events_are_one_chunk_of_messages_each_with_the_cursor_set() -> None:
    """Each event's message has the reader's complete cursor set as its id: the event's edition at
    the event's cursor, the other editions at the hub's positions; editions sorted."""
    encoding = encoding_for(frozenset({"en", "ar"}))
    first, second = _event("en", "1795627049881-0", "one"), _event("en", "1795627049882-3", "two")
    expected = (
        f"id: ar:1795627050159-0,en:1795627049881-0\ndata: {first.frame}\n\n"
        f"id: ar:1795627050159-0,en:1795627049882-3\ndata: {second.frame}\n\n"
    )
    # The hub passes the other editions' positions only (service/hub.py _dispatch).
    others = {"ar": "1795627050159-0", "es": "1795627040000-0"}
    assert _unchunk(encoding.encode((first, second), others)).decode() == expected
    # Given the event's own edition too, the event's cursor wins.
    positions = {"en": "1795627049800-0", **others}
    assert _unchunk(encoding.encode((first, second), positions)).decode() == expected


def test_one_encoding_per_set_of_editions_and_a_heartbeat_with_the_cursor_set() -> None:
    """Readers of the same editions share one encoding (the hub groups writes by it); a heartbeat
    carries the reader's complete cursor set like every other message (docs/protocol.md 15, the
    `id` rule: the delivery model flags a message without one)."""
    assert encoding_for(frozenset({"ar", "en"})) is encoding_for(frozenset({"en", "ar"}))
    assert encoding_for(frozenset({"en"})) is not encoding_for(frozenset({"en", "ar"}))
    positions = {"en": "1795627049800-0", "ar": "1795627050159-0", "es": "1795627040000-0"}
    beat = _unchunk(encoding_for(frozenset({"en", "ar"})).heartbeat(positions))
    assert beat == b'id: ar:1795627050159-0,en:1795627049800-0\ndata: {"type":"heartbeat"}\n\n'
