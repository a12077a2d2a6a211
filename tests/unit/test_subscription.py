"""flashwire.service.subscription: a reader's subscription from a URL query or a subscribe message,
and the field each refusal names."""

from __future__ import annotations

from typing import Any

import pytest

from flashwire.core.settings import Settings
from flashwire.service.events import Filter
from flashwire.service.subscription import SubscriptionError, from_message, from_query

SETTINGS = Settings(node_name="test")


def field_of(exc: pytest.ExceptionInfo[SubscriptionError]) -> str:
    return exc.value.field


def test_query_without_subscription_fields_is_none() -> None:
    """A URL query that asks for nothing means 'wait for a subscribe message'."""
    assert from_query(SETTINGS, {}) is None
    assert from_query(SETTINGS, {"utm_source": "x"}) is None


def test_query_defaults_to_every_edition_and_routine() -> None:
    """With only a filter in the query, the reader gets every configured edition and every urgency."""
    sub = from_query(SETTINGS, {"topics": "politics, europe"})
    assert sub is not None
    assert sub.editions == SETTINGS.editions
    assert sub.filter == Filter(topics=frozenset({"politics", "europe"}), max_rank=2)
    assert dict(sub.since) == {}
    assert sub.describe() == {
        "type": "subscribed",
        "editions": list(SETTINGS.editions),
        "topics": ["europe", "politics"],
        "min_urgency": "routine",
        "resuming": [],
    }


def test_bare_since_applies_to_the_single_edition() -> None:
    """`since=<cursor>` with one edition resumes that edition; `edition` and `editions` both work."""
    for query in (
        {"edition": "ar", "since": "1732550400000-3"},
        {"editions": "ar", "since": "1732550400000-3"},
    ):
        sub = from_query(SETTINGS, query)
        assert sub is not None
        assert sub.editions == ("ar",)
        assert dict(sub.since) == {"ar": "1732550400000-3"}
    sub = from_query(SETTINGS, {"editions": "en,en", "since": "5", "min_urgency": "urgent"})
    assert sub is not None
    assert sub.editions == ("en",)
    assert dict(sub.since) == {"en": "5"}
    assert sub.filter.max_rank == 1


def test_since_names_each_edition_cursor() -> None:
    """`since=en:..,ar:..` gives a cursor per edition, and an edition may be left to a snapshot."""
    sub = from_query(SETTINGS, {"editions": "en,ar,es", "since": "en:1-0, ar:2-5"})
    assert sub is not None
    assert dict(sub.since) == {"en": "1-0", "ar": "2-5"}
    assert sub.describe()["resuming"] == ["ar", "en"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param({"editions": "en,fr"}, "editions", id="unknown-edition"),
        pytest.param({"topics": "politics,kittens"}, "topics", id="unknown-topic"),
        pytest.param({"min_urgency": "breaking"}, "min_urgency", id="unknown-urgency"),
        pytest.param({"since": "1-0"}, "since", id="bare-since-with-several-editions"),
        pytest.param({"edition": "en", "since": "yesterday"}, "since", id="malformed-cursor"),
        pytest.param({"edition": "en", "since": "1-"}, "since", id="cursor-missing-seq"),
        pytest.param({"edition": "en", "since": "1-2-3"}, "since", id="cursor-three-parts"),
        pytest.param({"edition": "en", "since": "en:"}, "since", id="empty-named-cursor"),
        pytest.param({"editions": "en", "since": "ar:1-0"}, "since", id="cursor-for-unsubscribed-edition"),
    ],
)
def test_query_errors_name_the_field(query: dict[str, str], field: str) -> None:
    """Each malformed subscription query raises SubscriptionError naming the query field."""
    with pytest.raises(SubscriptionError) as caught:
        from_query(SETTINGS, query)
    assert field_of(caught) == field


def test_subscribe_message_builds_the_same_subscription() -> None:
    """A subscribe message with editions, topics, urgency and per-edition cursors is parsed like a query."""
    sub = from_message(
        SETTINGS,
        {
            "type": "subscribe",
            "editions": ["ar", "en"],
            "topics": ["mena"],
            "min_urgency": "flash",
            "since": {"ar": "17-0"},
        },
    )
    assert sub.editions == ("ar", "en")
    assert sub.filter == Filter(topics=frozenset({"mena"}), max_rank=0)
    assert dict(sub.since) == {"ar": "17-0"}
    assert from_message(SETTINGS, {"type": "subscribe"}).editions == SETTINGS.editions
    assert dict(from_message(SETTINGS, {"editions": ["es"], "since": "9-9"}).since) == {"es": "9-9"}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        pytest.param({"editions": "en"}, "editions", id="editions-string"),
        pytest.param({"editions": ["en", 1]}, "editions", id="editions-number"),
        pytest.param({"editions": ["xx"]}, "editions", id="unknown-edition"),
        pytest.param({"topics": "politics"}, "topics", id="topics-string"),
        pytest.param({"topics": ["unknown"]}, "topics", id="unknown-topic"),
        pytest.param({"min_urgency": 1}, "min_urgency", id="urgency-number"),
        pytest.param({"min_urgency": "low"}, "min_urgency", id="unknown-urgency"),
        pytest.param({"since": 5}, "since", id="since-number"),
        pytest.param({"editions": ["en"], "since": {"en": 5}}, "since", id="cursor-number"),
        pytest.param({"editions": ["en"], "since": {"en": "x-1"}}, "since", id="malformed-cursor"),
        pytest.param({"editions": ["en"], "since": {"es": "1-0"}}, "since", id="unsubscribed-edition"),
    ],
)
def test_subscribe_message_errors_name_the_field(message: dict[str, Any], field: str) -> None:
    """Each malformed subscribe message raises SubscriptionError naming the message field."""
    with pytest.raises(SubscriptionError) as caught:
        from_message(SETTINGS, {"type": "subscribe", **message})
    assert field_of(caught) == field


def test_cursor_with_non_ascii_digits_is_refused() -> None:
    """A cursor written in Arabic-Indic digits is not a stream id and is refused as `since`."""
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "1732550400000")  # the digits U+0660-U+0669
    with pytest.raises(SubscriptionError) as caught:
        from_query(SETTINGS, {"edition": "ar", "since": f"{arabic_indic}-\u0660"})
    assert field_of(caught) == "since"
