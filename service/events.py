"""Ticker events as they leave Redis: parsed once, serialised once per process.

The worker stores an event's body as JSON in the ticker stream. The hub turns
each stream entry into one `Event` whose `frame` is the exact text every
matching subscriber is sent, so no per-subscriber encoding ever happens. The
frames are the `line`, `update` and `retract` messages of flashwire/core/protocol.py
(LineEvent, UpdateEvent, RetractEvent): the models describe them, nothing here
validates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from flashwire.core.clock import ms_from_iso
from flashwire.core.cursors import CursorKey, cursor_key
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.protocol import RETRACT
from flashwire.service.wire import text_frame


def _rank(urgency: object) -> int:
    return URGENCY_RANK.get(urgency, 2) if isinstance(urgency, str) else 2


@dataclass(frozen=True, slots=True)
class Event:
    """One ticker event of one edition, ready to send.

    An `update` that changed the line's topics or urgency also carries a
    `withdrawal`: the same cursor as a `retract` with reason "filtered", for the
    readers whose filter matched the line before the correction and not after.
    """

    edition: str
    cursor: str
    key: CursorKey
    type: str
    topics: frozenset[str]
    rank: int
    frame: str
    withdrawal: Event | None = None
    previous_topics: frozenset[str] = frozenset()
    previous_rank: int = 2
    # (line id, version) of a publication or a correction, counted for reach; else None.
    reach_key: tuple[str, int] | None = None
    # When the desk accepted this version (ms): reach latency runs from here.
    accepted_ms: int = 0
    # The whole WebSocket frame, identical for every subscriber.
    wire: bytes = b""

    @classmethod
    def from_entry(cls, edition: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
        """Build from a ticker stream entry (fields `t` = type, `d` = JSON body)."""
        cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        event_type = fields[b"t"].decode()
        body = fields[b"d"].decode()
        data: dict[str, Any] = orjson.loads(body)
        line: dict[str, Any] = data.get("line") or {}
        common: dict[str, Any] = {
            "edition": edition,
            "cursor": cursor,
            "key": cursor_key(cursor),
            "topics": frozenset(line.get("topics", ())),
            "rank": _rank(line.get("urgency")),
        }
        extra: dict[str, Any] = {}
        if event_type == "line" or (event_type == "update" and data.get("change") == "correction"):
            extra["reach_key"] = (str(line.get("id")), int(line.get("version", 1)))
            extra["accepted_ms"] = ms_from_iso(line["updated_at"]) if "updated_at" in line else 0
        previous = data.get("previous")
        if event_type == "update" and isinstance(previous, dict):
            previous_topics = frozenset(previous.get("topics", ()))
            previous_rank = _rank(previous.get("urgency"))
            if (previous_topics, previous_rank) != (common["topics"], common["rank"]):
                withdrawn = {
                    "type": RETRACT,
                    "edition": edition,
                    "cursor": cursor,
                    "id": line.get("id"),
                    "reason": "filtered",
                    "note": "",
                    "line": line,
                }
                withdrawn_frame = orjson.dumps(withdrawn)
                extra["withdrawal"] = cls(
                    type=RETRACT, frame=withdrawn_frame.decode(), wire=text_frame(withdrawn_frame), **common
                )
                extra["previous_topics"] = previous_topics
                extra["previous_rank"] = previous_rank
        frame = f'{{"type":"{event_type}","edition":"{edition}","cursor":"{cursor}",{body[1:]}'
        return cls(type=event_type, frame=frame, wire=text_frame(frame.encode()), **common, **extra)


@dataclass(frozen=True, slots=True)
class Filter:
    """A reader's choice: any of `topics` (empty = all), urgency rank at most `max_rank`."""

    topics: frozenset[str] = frozenset()
    max_rank: int = 2

    def _matches(self, topics: frozenset[str], rank: int) -> bool:
        return rank <= self.max_rank and (not self.topics or not self.topics.isdisjoint(topics))

    def select(self, event: Event) -> Event | None:
        """What a subscriber with this filter is sent for `event`: the event, its withdrawal
        (the line was corrected out of the filter), or nothing."""
        if self._matches(event.topics, event.rank):
            return event
        if event.withdrawal is not None and self._matches(event.previous_topics, event.previous_rank):
            return event.withdrawal
        return None

    def accepts_line(self, line: dict[str, Any]) -> bool:
        """Same test on a line document (for snapshots)."""
        if URGENCY_RANK.get(line.get("urgency", "routine"), 2) > self.max_rank:
            return False
        return not self.topics or not self.topics.isdisjoint(line.get("topics", ()))
