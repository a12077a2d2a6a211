"""flashwire.service.events and flashwire.core.cursors: cursor order, the one JSON frame per stored event,
and reader filters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from flashwire.core.cursors import cursor_key
from flashwire.service.events import Event, Filter


def test_cursor_key_orders_numerically_and_rejects_malformed() -> None:
    """Cursors sort by (ms, seq) as numbers, not as strings; a bare ms is seq 0; junk raises ValueError."""
    cursors = ["10-0", "9-10", "9-2", "1732550400000-0", "9", "0-0"]
    assert sorted(cursors, key=cursor_key) == ["0-0", "9", "9-2", "9-10", "10-0", "1732550400000-0"]
    assert cursor_key("9") == cursor_key("9-0") == (9, 0)
    assert cursor_key("1732550400000-3") == (1732550400000, 3)
    for junk in ("", "-", "-1", "1-", "a-1", "1-a", "1.5-0", " 1-0", "1-0 ", "1-2-3", "+1-0"):
        with pytest.raises(ValueError):
            cursor_key(junk)


def _entry(event_type: str, body: dict[str, Any]) -> dict[bytes, bytes]:
    return {b"t": event_type.encode(), b"d": orjson.dumps(body)}


def test_event_frame_is_valid_json_with_type_edition_cursor_and_body() -> None:
    """Event.from_entry builds one JSON frame holding type, edition, cursor and the whole stored body."""
    line = {
        "id": "ar-1",
        "version": 1,
        "text": 'عاجل: "اتفاق" \\ وقف إطلاق النار\u200f',
        "urgency": "flash",
        "topics": ["mena", "politics"],
    }
    event = Event.from_entry("ar", b"1732550400000-7", _entry("line", {"line": line}))
    frame = orjson.loads(event.frame)
    assert frame == {"type": "line", "edition": "ar", "cursor": "1732550400000-7", "line": line}
    assert (event.edition, event.cursor, event.type) == ("ar", "1732550400000-7", "line")
    assert event.key == (1732550400000, 7)
    assert event.topics == frozenset({"mena", "politics"})
    assert event.rank == 0

    retract = {"id": "ar-1", "reason": "killed", "note": "", "line": {**line, "status": "canceled"}}
    killed = Event.from_entry("ar", "1732550400001-0", _entry("retract", retract))
    assert orjson.loads(killed.frame) == {
        "type": "retract",
        "edition": "ar",
        "cursor": "1732550400001-0",
        **retract,
    }


def _event(topics: list[str], urgency: str) -> Event:
    body = {"line": {"id": "en-1", "topics": topics, "urgency": urgency}}
    return Event.from_entry("en", "1-0", _entry("line", body))


def test_filter_selects_by_topic_overlap_and_minimum_urgency() -> None:
    """A filter passes events sharing any chosen topic (none chosen = all) at or above the minimum urgency."""
    everything = Filter()
    politics = Filter(topics=frozenset({"politics"}))
    urgent_up = Filter(max_rank=1)
    flash_europe = Filter(topics=frozenset({"europe"}), max_rank=0)

    routine_politics = _event(["politics", "europe"], "routine")
    urgent_sports = _event(["sports"], "urgent")
    flash_untagged = _event([], "flash")
    flash_europe_event = _event(["europe"], "flash")

    assert [everything.select(e) is e for e in (routine_politics, urgent_sports, flash_untagged)] == [
        True
    ] * 3
    assert [politics.select(e) is e for e in (routine_politics, urgent_sports, flash_untagged)] == [
        True,
        False,
        False,
    ]
    assert [urgent_up.select(e) is e for e in (routine_politics, urgent_sports, flash_untagged)] == [
        False,
        True,
        True,
    ]
    assert flash_europe.select(flash_europe_event) is flash_europe_event
    assert flash_europe.select(routine_politics) is None  # right topic, too low
    assert flash_europe.select(flash_untagged) is None  # urgent enough, wrong topic
    # Snapshots use the same rule on line documents.
    assert politics.accepts_line({"topics": ["politics"], "urgency": "routine"})
    assert not urgent_up.accepts_line({"topics": [], "urgency": "routine"})
