"""One edition's subscribers grouped by filter, the groups indexed by what they match.

Readers choose their filter (docs/protocol.md: any of some topics, at least some urgency), so a
node can hold thousands of different ones. Asking every filter about every event cost 2.7x the
CPU per delivered frame of unfiltered readers at 5,000 random filters (issue 14); here an event
visits only the groups that match it: the groups without topics, and those listing one of the
event's topics, in both cases of an urgency rank the event meets. Readers with the same filter
share one group, so the hub selects and encodes a round's events once per group (service/hub.py).

An `update` that carries a withdrawal (its topics or urgency changed) also concerns readers whose
filter matched the line before and not after; those events ask every group (`groups()`), which
is rare (a correction that moves a line) and no slower than before.

Bounded: a group goes, and with it its entries, when its last subscriber leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from flashwire.core.lines import URGENCY_RANK
from flashwire.service.events import Event, Filter

# Urgency ranks, 0 (flash) to 2 (routine): a filter of rank r takes events of rank <= r.
RANKS = max(URGENCY_RANK.values()) + 1

S = TypeVar("S")


class Group(Generic[S]):
    """The subscribers of one edition that share one filter."""

    __slots__ = ("filter", "subscribers")

    def __init__(self, filter_: Filter) -> None:
        self.filter = filter_
        self.subscribers: set[S] = set()


def _rank(filter_: Filter) -> int | None:
    """The bucket of a filter: its max rank, within the ranks there are (None: it takes no rank)."""
    return None if filter_.max_rank < 0 else min(filter_.max_rank, RANKS - 1)


class FilterIndex(Generic[S]):
    """Subscribers of one edition by filter: topic -> rank -> groups, and the topic-less groups by rank."""

    __slots__ = ("_by_topic", "_groups", "_size", "_topicless")

    def __init__(self) -> None:
        self._groups: dict[Filter, Group[S]] = {}
        # _topicless[r]: groups without topics whose max rank is r; _by_topic[t][r]: groups
        # listing topic t whose max rank is r. An event of rank k matches buckets k and above.
        self._topicless: list[dict[Filter, Group[S]]] = [{} for _ in range(RANKS)]
        self._by_topic: dict[str, list[dict[Filter, Group[S]]]] = {}
        self._size = 0

    def __len__(self) -> int:
        """Subscribers in the index."""
        return self._size

    def __iter__(self) -> Iterator[S]:
        """Every subscriber once."""
        for group in self._groups.values():
            yield from group.subscribers

    def groups(self) -> Iterator[Group[S]]:
        """Every group (for an event with a withdrawal, which matches by its filter's `select`)."""
        return iter(list(self._groups.values()))

    @property
    def group_count(self) -> int:
        """Distinct filters held: what the index costs, whatever the number of readers."""
        return len(self._groups)

    @property
    def entry_count(self) -> int:
        """Entries in the topic and urgency buckets (0 once every subscriber has left)."""
        topical = sum(len(bucket) for buckets in self._by_topic.values() for bucket in buckets)
        return topical + sum(len(bucket) for bucket in self._topicless)

    def add(self, subscriber: S, filter_: Filter) -> bool:
        """Add `subscriber` under `filter_`; False if it was there already."""
        group = self._groups.get(filter_)
        if group is None:
            group = self._groups[filter_] = Group(filter_)
            rank = _rank(filter_)
            if rank is None:
                pass
            elif not filter_.topics:
                self._topicless[rank][filter_] = group
            else:
                for topic in filter_.topics:
                    buckets = self._by_topic.get(topic)
                    if buckets is None:
                        buckets = self._by_topic[topic] = [{} for _ in range(RANKS)]
                    buckets[rank][filter_] = group
        elif subscriber in group.subscribers:
            return False
        group.subscribers.add(subscriber)
        self._size += 1
        return True

    def remove(self, subscriber: S, filter_: Filter) -> bool:
        """Remove `subscriber` (False if it was not there); a group left empty leaves the index."""
        group = self._groups.get(filter_)
        if group is None or subscriber not in group.subscribers:
            return False
        group.subscribers.discard(subscriber)
        self._size -= 1
        if not group.subscribers:
            del self._groups[filter_]
            rank = _rank(filter_)
            if rank is None:
                pass
            elif not filter_.topics:
                del self._topicless[rank][filter_]
            else:
                for topic in filter_.topics:
                    buckets = self._by_topic[topic]
                    del buckets[rank][filter_]
                    if not any(buckets):
                        del self._by_topic[topic]
        return True

    def matching(self, event: Event) -> list[Group[S]]:
        """The groups whose filter matches `event` itself (its withdrawal aside), each once."""
        rank = min(max(event.rank, 0), RANKS)
        found: list[Group[S]] = []
        for bucket in self._topicless[rank:]:
            found.extend(bucket.values())
        topics = event.topics
        if len(topics) == 1:
            (topic,) = topics
            buckets = self._by_topic.get(topic)
            if buckets is not None:
                for bucket in buckets[rank:]:
                    found.extend(bucket.values())
        elif topics:
            # A filter listing two of the event's topics sits in two buckets: count it once.
            several: dict[Filter, Group[S]] = {}
            for topic in topics:
                buckets = self._by_topic.get(topic)
                if buckets is not None:
                    for bucket in buckets[rank:]:
                        several.update(bucket)
            found.extend(several.values())
        return found
