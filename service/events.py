"""Ticker events as they leave Redis: parsed once, serialised once per process.

The worker stores an event's body as JSON in the ticker stream. The hub turns
each stream entry into one `Event` whose `frame` is the exact text every
matching subscriber is sent, so no per-subscriber encoding ever happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service.lines import URGENCY_RANK

HEARTBEAT_FRAME = '{"type":"heartbeat"}'


def cursor_key(cursor: str) -> tuple[int, int]:
    """Sortable form of a cursor (a stream id such as '1732550400000-3'); ValueError if malformed."""
    ms, sep, seq = cursor.partition("-")
    if not ms.isdigit() or (sep and not seq.isdigit()):
        raise ValueError(f"malformed cursor {cursor!r}")
    return int(ms), int(seq) if seq else 0


@dataclass(frozen=True, slots=True)
class Event:
    """One ticker event of one edition, ready to send."""

    edition: str
    cursor: str
    key: tuple[int, int]
    type: str
    topics: frozenset[str]
    rank: int
    frame: str

    @classmethod
    def from_entry(cls, edition: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
        """Build from a ticker stream entry (fields `t` = type, `d` = JSON body)."""
        cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        event_type = fields[b"t"].decode()
        body = fields[b"d"].decode()
        line: dict[str, Any] = orjson.loads(body).get("line") or {}
        frame = f'{{"type":"{event_type}","edition":"{edition}","cursor":"{cursor}",{body[1:]}'
        return cls(
            edition=edition,
            cursor=cursor,
            key=cursor_key(cursor),
            type=event_type,
            topics=frozenset(line.get("topics", ())),
            rank=URGENCY_RANK.get(line.get("urgency", "routine"), 2),
            frame=frame,
        )


@dataclass(frozen=True, slots=True)
class Filter:
    """A reader's choice: any of `topics` (empty = all), urgency rank at most `max_rank`."""

    topics: frozenset[str] = frozenset()
    max_rank: int = 2

    def accepts(self, event: Event) -> bool:
        """Should a subscriber with this filter get `event`?"""
        if event.rank > self.max_rank:
            return False
        return not self.topics or not self.topics.isdisjoint(event.topics)

    def accepts_line(self, line: dict[str, Any]) -> bool:
        """Same test on a line document (for snapshots)."""
        if URGENCY_RANK.get(line.get("urgency", "routine"), 2) > self.max_rank:
            return False
        return not self.topics or not self.topics.isdisjoint(line.get("topics", ()))
