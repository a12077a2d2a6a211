"""A reader's subscription: editions, filters and resume cursors, from a URL query or a message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from flashwire.core.cursors import cursor_key, parse_since
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.models import Urgency
from flashwire.core.protocol import DESK, READER, ROLES, SUBSCRIBED, ConnectionRole, Subscribed
from flashwire.core.settings import Settings
from flashwire.service.events import Filter

QUERY_FIELDS = ("editions", "edition", "topics", "min_urgency", "since", "role")


class SubscriptionError(ValueError):
    """The subscription is malformed; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Subscription:
    """What a reader asked for."""

    editions: tuple[str, ...]
    filter: Filter = field(default_factory=Filter)
    since: Mapping[str, str] = field(default_factory=dict)
    # `reader`, or `desk`: the newsroom's desk page, counted in neither reach nor the readers online
    # (docs/protocol.md 2.4). Claiming `desk` only takes a connection out of those counts.
    role: ConnectionRole = READER

    @property
    def counted(self) -> bool:
        """Does this connection count as a reader (reach, readers online)?"""
        return self.role == READER

    def describe(self) -> dict[str, Any]:
        """The `subscribed` confirmation message (protocol.Subscribed), once per connection."""
        min_urgency = next(n for n, r in URGENCY_RANK.items() if r == self.filter.max_rank)
        return Subscribed(
            type=SUBSCRIBED,
            editions=list(self.editions),
            topics=sorted(self.filter.topics),
            min_urgency=cast(Urgency, min_urgency),
            resuming=sorted(self.since),
            role=None if self.counted else DESK,
        ).model_dump(mode="json", exclude_none=True)


@lru_cache(maxsize=1024)
def shared_filter(topics: frozenset[str], max_rank: int) -> Filter:
    """One `Filter` object for every reader that chose the same topics and urgency.

    A filter is immutable, and most readers choose one of a few (all topics, or a section): one
    shared object instead of one each (a filter and its set, about 260 bytes) per idle reader.
    Bounded, because topic sets are the client's choice (of the known topics: up to 2^16 sets).
    """
    return Filter(topics=topics, max_rank=max_rank)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build(
    settings: Settings,
    *,
    editions: list[str] | None,
    topics: list[str],
    min_urgency: str | None,
    since: Mapping[str, str] | str | None,
    role: str | None = None,
) -> Subscription:
    """Validate the parts of a subscription, whichever way they arrived."""
    role = role or READER
    if role not in ROLES:
        raise SubscriptionError("role", "must be reader or desk")
    chosen = editions if editions else list(settings.editions)
    for edition in chosen:
        if edition not in settings.editions:
            raise SubscriptionError("editions", f"unknown edition {edition!r}")
    chosen = list(dict.fromkeys(chosen))
    known_topics = set(settings.topics)
    for topic in topics:
        if topic not in known_topics:
            raise SubscriptionError("topics", f"unknown topic {topic!r}")
    urgency = min_urgency or "routine"
    if urgency not in URGENCY_RANK:
        raise SubscriptionError("min_urgency", "must be one of flash, urgent, routine")
    cursors: dict[str, str] = {}
    if isinstance(since, str):
        try:
            since = parse_since(since, chosen)
        except ValueError as exc:
            raise SubscriptionError("since", str(exc)) from None
    for edition, cursor in (since or {}).items():
        if edition not in chosen:
            raise SubscriptionError("since", f"cursor for edition {edition!r}, which is not subscribed")
        if not isinstance(cursor, str):
            raise SubscriptionError("since", f"cursor for {edition!r} must be a string")
        try:
            cursor_key(cursor)
        except ValueError:
            raise SubscriptionError("since", f"malformed cursor {cursor!r} for {edition!r}") from None
        cursors[edition] = cursor
    return Subscription(
        editions=tuple(chosen),
        filter=shared_filter(frozenset(topics), URGENCY_RANK[urgency]),
        since=cursors,
        role=cast(ConnectionRole, role),
    )


def from_query(settings: Settings, query: Mapping[str, str]) -> Subscription | None:
    """A subscription from a URL query, or None if the query asks for nothing."""
    if not any(name in query for name in QUERY_FIELDS):
        return None
    raw_editions = query.get("editions") or query.get("edition") or ""
    return build(
        settings,
        editions=_split(raw_editions) or None,
        topics=_split(query.get("topics", "")),
        min_urgency=query.get("min_urgency"),
        since=query.get("since") or None,
        role=query.get("role") or None,
    )


def from_message(settings: Settings, message: Mapping[str, Any]) -> Subscription:
    """A subscription from a `subscribe` message."""
    editions = message.get("editions")
    topics = message.get("topics", [])
    since = message.get("since")
    if editions is not None and not (
        isinstance(editions, list) and all(isinstance(e, str) for e in editions)
    ):
        raise SubscriptionError("editions", "must be a list of edition codes")
    if not (isinstance(topics, list) and all(isinstance(t, str) for t in topics)):
        raise SubscriptionError("topics", "must be a list of topic slugs")
    if since is not None and not isinstance(since, dict | str):
        raise SubscriptionError("since", "must be an object mapping edition to cursor")
    min_urgency = message.get("min_urgency")
    if min_urgency is not None and not isinstance(min_urgency, str):
        raise SubscriptionError("min_urgency", "must be one of flash, urgent, routine")
    role = message.get("role")
    if role is not None and not isinstance(role, str):
        raise SubscriptionError("role", "must be reader or desk")
    return build(settings, editions=editions, topics=topics, min_urgency=min_urgency, since=since, role=role)
