"""Random reader filters and random lines for `bench.fanout --filters random`, and the expected lines.

Each reader gets its own filter (a random non-empty subset of the configured topics, one to three,
and a random `min_urgency`); each posted line gets one to three random topics and a random urgency.
Both come from one seed, so the bench process (which posts the lines and counts the expected
deliveries) and every load-generator process (which checks its readers' lines) derive the same
plan without passing it around: reader i's filter is `reader_filters(seed, total)[i]`.

`matches` is the protocol's rule (docs/protocol.md section 7), written here a second time on
purpose: the bench checks the service against the documented rule, not against the service's own
code. A line matches a filter when its urgency is at least `min_urgency` and, the filter naming
topics, the line has any of them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "URGENCIES",
    "LineSpec",
    "ReaderFilter",
    "expected_lines",
    "matches",
    "random_lines",
    "reader_filters",
]

# Highest first: a filter's min_urgency admits its own rank and every rank before it.
URGENCIES: tuple[str, ...] = ("flash", "urgent", "routine")
_RANK = {urgency: rank for rank, urgency in enumerate(URGENCIES)}


@dataclass(frozen=True)
class ReaderFilter:
    """A reader's subscription filter: `topics` (empty: no topic filter) and `min_urgency`."""

    topics: tuple[str, ...] = ()
    min_urgency: str = "routine"

    def query(self) -> str:
        """The URL query parameters that ask for this filter, each with a leading `&`."""
        parts = [f"&min_urgency={self.min_urgency}"]
        if self.topics:
            parts.append("&topics=" + quote(",".join(self.topics), safe=","))
        return "".join(parts)


@dataclass(frozen=True)
class LineSpec:
    """What a posted line carries that filters look at."""

    topics: tuple[str, ...]
    urgency: str


def matches(reader: ReaderFilter, line: LineSpec) -> bool:
    """docs/protocol.md section 7: urgency at least min_urgency, and any topic in common (if any)."""
    if _RANK[line.urgency] > _RANK[reader.min_urgency]:
        return False
    return not reader.topics or not set(reader.topics).isdisjoint(line.topics)


def reader_filters(seed: int, total: int, topics: Sequence[str]) -> list[ReaderFilter]:
    """`total` random filters; the same list for the same (seed, total, topics)."""
    rng = random.Random(f"readers:{seed}")
    return [
        ReaderFilter(
            topics=tuple(sorted(rng.sample(list(topics), rng.randint(1, 3)))),
            min_urgency=rng.choice(URGENCIES),
        )
        for _ in range(total)
    ]


def random_lines(seed: int, count: int, topics: Sequence[str]) -> list[LineSpec]:
    """`count` random lines (topics and urgency); the same list for the same arguments."""
    rng = random.Random(f"lines:{seed}")
    return [
        LineSpec(
            topics=tuple(sorted(rng.sample(list(topics), rng.randint(1, 3)))), urgency=rng.choice(URGENCIES)
        )
        for _ in range(count)
    ]


def expected_lines(reader: ReaderFilter, lines: Sequence[LineSpec]) -> list[int]:
    """Indexes of the lines this reader must receive, in posting order."""
    return [index for index, line in enumerate(lines) if matches(reader, line)]
