"""flashwire.service.filter_index: readers by filter, each event visiting only the groups it matches."""

from __future__ import annotations

import random
from typing import Any

import orjson

from flashwire.core.settings import Settings
from flashwire.service.events import Event, Filter
from flashwire.service.filter_index import FilterIndex

TOPICS = Settings().topics
URGENCIES = ("flash", "urgent", "routine")


def _event(rng: random.Random, cursor: int) -> Event:
    line: dict[str, Any] = {
        "id": f"en-{cursor}",
        "urgency": rng.choice(URGENCIES),
        "topics": rng.sample(TOPICS, rng.randint(0, 3)),
    }
    return Event.from_entry("en", f"{cursor}-0", {b"t": b"line", b"d": orjson.dumps({"line": line})})


def _filter(rng: random.Random) -> Filter:
    return Filter(frozenset(rng.sample(TOPICS, rng.choice((0, 0, 1, 2, 5)))), rng.randint(0, 2))


def test_each_event_reaches_exactly_the_groups_whose_filter_matches_it() -> None:
    """With 300 readers of random filters (some shared), every random event reaches exactly the groups
    whose filter selects it, each once, and the readers in them."""
    rng = random.Random(14)
    index: FilterIndex[int] = FilterIndex()
    filters = {reader: _filter(rng) for reader in range(300)}
    for reader, filter_ in filters.items():
        assert index.add(reader, filter_)
    assert not index.add(0, filters[0]), "a reader is in once"
    assert len(index) == 300
    for cursor in range(1, 500):
        event = _event(rng, cursor)
        groups = index.matching(event)
        assert len({id(group) for group in groups}) == len(groups), "a group at most once"
        reached = sorted(reader for group in groups for reader in group.subscribers)
        assert reached == sorted(r for r, f in filters.items() if f.select(event) is event)


def test_readers_leaving_leave_the_index_empty() -> None:
    """Once every reader has left, nothing of their filters remains (the index cannot grow with the
    filters readers once chose)."""
    rng = random.Random(7)
    index: FilterIndex[int] = FilterIndex()
    filters = {reader: _filter(rng) for reader in range(200)}
    for reader, filter_ in filters.items():
        index.add(reader, filter_)
    assert index.group_count > 1 and index.entry_count >= index.group_count
    for reader, filter_ in filters.items():
        assert index.remove(reader, filter_)
        assert not index.remove(reader, filter_), "removing twice is harmless"
    assert (len(index), index.group_count, index.entry_count) == (0, 0, 0)
    assert list(index) == [] and list(index.groups()) == []
    assert index.matching(_event(rng, 1)) == []
