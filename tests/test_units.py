"""Fast in-process tests of the pieces the live path is built from, plus the worker's exactly-once commit.

Everything here runs without service or worker processes; only the Applier
tests use the private redis-server fixture.
"""

from __future__ import annotations

import asyncio
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from flashwire.core.clock import now_ms
from flashwire.core.keys import Keys
from flashwire.core.lines import ValidationError, clean_url, parse_correction, parse_post, parse_retraction
from flashwire.core.settings import Settings, SettingsError
from flashwire.dev.redis_server import RedisProcess
from flashwire.service.events import Event, Filter, cursor_key
from flashwire.service.subscription import SubscriptionError, from_message, from_query
from flashwire.service.tokens import Token
from flashwire.workers.apply import Applier

SETTINGS = Settings(node_name="test")


def future_iso(hours: float = 1.0) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def field_of(exc: pytest.ExceptionInfo[ValidationError] | pytest.ExceptionInfo[SubscriptionError]) -> str:
    return exc.value.field


# -- flashwire.core.lines -------------------------------------------------------------


def test_parse_post_accepts_a_full_line_and_applies_defaults() -> None:
    """A valid post is parsed field by field; urgency defaults to routine and expiry to now + default TTL."""
    before = now_ms()
    post = parse_post({"edition": "en", "text": "Minister resigns."}, SETTINGS)
    assert (post.edition, post.text, post.urgency, post.topics, post.url) == (
        "en",
        "Minister resigns.",
        "routine",
        (),
        None,
    )
    assert (
        before + SETTINGS.default_ttl_s * 1000
        <= post.expires_at_ms
        <= now_ms() + SETTINGS.default_ttl_s * 1000
    )

    full = parse_post(
        {
            "edition": "es",
            "text": "Terremoto en Chile.",
            "urgency": "flash",
            "topics": ["latin-america", "environment", "latin-america"],
            "url": "https://example.com/story?id=1",
            "expires_at": "2999-01-01T00:00:00Z",
        },
        SETTINGS,
    )
    assert full.urgency == "flash"
    assert full.topics == ("latin-america", "environment")
    assert full.url == "https://example.com/story?id=1"
    assert full.expires_at_ms == int(datetime(2999, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert parse_post({"text": "From the URL."}, SETTINGS, edition="ar").edition == "ar"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param("not an object", "body", id="string-body"),
        pytest.param([{"edition": "en", "text": "x"}], "body", id="array-body"),
        pytest.param(None, "body", id="null-body"),
        pytest.param({"text": "x"}, "edition", id="missing-edition"),
        pytest.param({"edition": 1, "text": "x"}, "edition", id="edition-not-string"),
        pytest.param({"edition": "fr", "text": "x"}, "edition", id="edition-unknown"),
        pytest.param({"edition": "en"}, "text", id="missing-text"),
        pytest.param({"edition": "en", "text": "x", "author": "me"}, "author", id="unknown-field"),
        pytest.param({"edition": "en", "text": ["x"]}, "text", id="text-not-string"),
        pytest.param({"edition": "en", "text": "\u3000 \n"}, "text", id="text-only-whitespace"),
        pytest.param({"edition": "en", "text": "a" * 281}, "text", id="text-too-long"),
        pytest.param({"edition": "en", "text": "x", "urgency": "breaking"}, "urgency", id="urgency-unknown"),
        pytest.param({"edition": "en", "text": "x", "urgency": None}, "urgency", id="urgency-null"),
        pytest.param({"edition": "en", "text": "x", "topics": "politics"}, "topics", id="topics-string"),
        pytest.param({"edition": "en", "text": "x", "topics": ["kittens"]}, "topics[0]", id="topic-unknown"),
        pytest.param({"edition": "en", "text": "x", "topics": ["asia", 3]}, "topics[1]", id="topic-number"),
        pytest.param({"edition": "en", "text": "x", "topics": ["a"] * 9}, "topics", id="too-many-topics"),
        pytest.param({"edition": "en", "text": "x", "url": "javascript:alert(1)"}, "url", id="url-js"),
        pytest.param({"edition": "en", "text": "x", "url": "JavaScript:alert(1)"}, "url", id="url-js-case"),
        pytest.param({"edition": "en", "text": "x", "url": "data:text/html,<b>x"}, "url", id="url-data"),
        pytest.param({"edition": "en", "text": "x", "url": "ftp://example.com/"}, "url", id="url-ftp"),
        pytest.param({"edition": "en", "text": "x", "url": "https://exa mple.com"}, "url", id="url-space"),
        pytest.param({"edition": "en", "text": "x", "url": "https://"}, "url", id="url-no-host"),
        pytest.param({"edition": "en", "text": "x", "url": "/relative"}, "url", id="url-relative"),
        pytest.param(
            {"edition": "en", "text": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at", id="past"
        ),
        pytest.param(
            {"edition": "en", "text": "x", "expires_at": "2999-01-01T00:00"}, "expires_at", id="naive"
        ),
        pytest.param({"edition": "en", "text": "x", "expires_at": "soon"}, "expires_at", id="garbage-time"),
        pytest.param(
            {"edition": "en", "text": "x", "expires_at": 4102444800}, "expires_at", id="epoch-number"
        ),
    ],
)
def test_parse_post_rejects_with_the_field_named(body: object, field: str) -> None:
    """Each invalid post raises ValidationError naming exactly the offending field."""
    with pytest.raises(ValidationError) as caught:
        parse_post(body, SETTINGS)
    assert field_of(caught) == field
    assert caught.value.message


def test_text_is_nfc_normalised_and_whitespace_collapsed() -> None:
    """Decomposed accents are composed (NFC) and runs of whitespace become single spaces, trimmed."""
    post = parse_post({"edition": "en", "text": "  Cafe\u0301 owner\n\n\tarrested   "}, SETTINGS)
    assert post.text == "Caf\u00e9 owner arrested"
    assert unicodedata.is_normalized("NFC", post.text)
    # The limit counts characters after normalisation: 280 decomposed "é" are 280 characters.
    assert len(parse_post({"edition": "en", "text": "e\u0301" * 280}, SETTINGS).text) == 280
    with pytest.raises(ValidationError) as caught:
        parse_post({"edition": "en", "text": "e\u0301" * 281}, SETTINGS)
    assert field_of(caught) == "text"


@pytest.mark.parametrize(
    "char",
    ["\x00", "\x07", "\x1b", "\x7f", "\x9b", "\ue000", "\ud800", "\U000e0080"],
    ids=["nul", "bell", "escape", "delete", "c1-csi", "private-use", "surrogate", "unassigned"],
)
def test_control_and_unassigned_characters_are_rejected(char: str) -> None:
    """Control, private-use, surrogate and unassigned characters in text are refused, naming text."""
    with pytest.raises(ValidationError) as caught:
        parse_post({"edition": "en", "text": f"Breaking{char} news"}, SETTINGS)
    assert field_of(caught) == "text"
    assert f"U+{ord(char):04X}" in caught.value.message


def test_arabic_text_with_bidi_marks_is_accepted_unchanged() -> None:
    """Arabic headlines, including RLM/LRM/ALM bidi marks and harakat, pass validation intact."""
    text = "\u200fعاجل: الرئيس يعلن \u200e2026\u200e موعدًا للانتخابات\u061c"  # noqa: RUF001
    post = parse_post({"edition": "ar", "text": text, "topics": ["mena"]}, SETTINGS)
    assert post.text == unicodedata.normalize("NFC", text)
    assert "\u200f" in post.text and "\u200e" in post.text and "\u061c" in post.text
    assert SETTINGS.direction("ar") == "rtl" and SETTINGS.direction("en") == "ltr"


def test_clean_url_accepts_http_and_https_only() -> None:
    """http(s) links of any case pass unchanged; null means no link."""
    assert clean_url("HTTPS://Example.com/a?b=c#d") == "HTTPS://Example.com/a?b=c#d"
    assert clean_url("http://example.com") == "http://example.com"
    assert clean_url(None) is None


def test_parse_correction_keeps_only_changed_fields() -> None:
    """A correction returns only the fields sent, validated; expiry becomes epoch ms; url may be cleared."""
    correction = parse_correction({"text": "  Death toll   rises to 21. ", "url": None}, SETTINGS)
    assert correction.changes == {"text": "Death toll rises to 21.", "url": None}
    later = parse_correction(
        {"expires_at": future_iso(2), "urgency": "urgent", "topics": ["europe"]}, SETTINGS
    )
    assert set(later.changes) == {"expires_at_ms", "urgency", "topics"}
    assert later.changes["expires_at_ms"] > now_ms() + 3600 * 1000
    assert later.changes["topics"] == ["europe"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "body", id="empty"),
        pytest.param([], "body", id="array"),
        pytest.param(None, "body", id="null"),
        pytest.param({"edition": "ar"}, "edition", id="edition-not-changeable"),
        pytest.param({"status": "canceled"}, "status", id="unknown-field"),
        pytest.param({"text": ""}, "text", id="empty-text"),
        pytest.param({"text": "x" * 281}, "text", id="long-text"),
        pytest.param({"urgency": "URGENT"}, "urgency", id="urgency-case"),
        pytest.param({"topics": ["politics", "nope"]}, "topics[1]", id="topic-unknown"),
        pytest.param({"url": "javascript:alert(1)"}, "url", id="url-js"),
        pytest.param({"expires_at": None}, "expires_at", id="expiry-null"),
        pytest.param({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", id="expiry-past"),
    ],
)
def test_parse_correction_rejects_with_the_field_named(body: object, field: str) -> None:
    """Each invalid correction raises ValidationError naming the offending field."""
    with pytest.raises(ValidationError) as caught:
        parse_correction(body, SETTINGS)
    assert field_of(caught) == field


def test_parse_retraction_reason_is_optional_and_bounded() -> None:
    """A retraction needs no body; a reason is whitespace-collapsed, a string, and at most 200 chars."""
    assert parse_retraction(None) == ""
    assert parse_retraction({}) == ""
    assert parse_retraction({"reason": "  could not\n be  confirmed "}) == "could not be confirmed"
    assert parse_retraction({"reason": "r" * 200}) == "r" * 200
    for body, field in [
        ({"reason": 5}, "reason"),
        ({"reason": "r" * 201}, "reason"),
        ({"why": "x"}, "why"),
        (["x"], "body"),
        ("x", "body"),
    ]:
        with pytest.raises(ValidationError) as caught:
            parse_retraction(body)
        assert field_of(caught) == field, body


# -- flashwire.service.subscription ------------------------------------------------------


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


# -- flashwire.service.events ------------------------------------------------------------


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


def test_filter_accepts_by_topic_overlap_and_minimum_urgency() -> None:
    """A filter passes events sharing any chosen topic (none chosen = all) at or above the minimum urgency."""
    everything = Filter()
    politics = Filter(topics=frozenset({"politics"}))
    urgent_up = Filter(max_rank=1)
    flash_europe = Filter(topics=frozenset({"europe"}), max_rank=0)

    routine_politics = _event(["politics", "europe"], "routine")
    urgent_sports = _event(["sports"], "urgent")
    flash_untagged = _event([], "flash")
    flash_europe_event = _event(["europe"], "flash")

    assert [everything.accepts(e) for e in (routine_politics, urgent_sports, flash_untagged)] == [True] * 3
    assert [politics.accepts(e) for e in (routine_politics, urgent_sports, flash_untagged)] == [
        True,
        False,
        False,
    ]
    assert [urgent_up.accepts(e) for e in (routine_politics, urgent_sports, flash_untagged)] == [
        False,
        True,
        True,
    ]
    assert flash_europe.accepts(flash_europe_event)
    assert not flash_europe.accepts(routine_politics)  # right topic, too low
    assert not flash_europe.accepts(flash_untagged)  # urgent enough, wrong topic
    # Snapshots use the same rule on line documents.
    assert politics.accepts_line({"topics": ["politics"], "urgency": "routine"})
    assert not urgent_up.accepts_line({"topics": [], "urgency": "routine"})


# -- flashwire.core.settings ----------------------------------------------------------


def test_settings_defaults() -> None:
    """With no environment, settings are the documented defaults (127.0.0.1:8000, 280 chars, 16 KiB)."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.editions == ("en", "ar", "es")
    assert settings.text_max_chars == 280
    assert settings.max_body_bytes == 16 * 1024
    custom = Settings.from_env(
        {
            "FLASHWIRE_EDITIONS": " en , fr ,",
            "REDIS_URL": "unix:///tmp/r.sock",
            "FLASHWIRE_HEARTBEAT_S": "2.5",
        }
    )
    assert custom.editions == ("en", "fr")
    assert custom.redis_url == "unix:///tmp/r.sock"
    assert custom.heartbeat_s == 2.5


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"FLASHWIRE_PORT": "eighty"}, "FLASHWIRE_PORT", id="port-not-int"),
        pytest.param({"FLASHWIRE_PORT": "-1"}, "FLASHWIRE_PORT", id="port-negative"),
        pytest.param({"FLASHWIRE_TEXT_MAX_CHARS": "0"}, "FLASHWIRE_TEXT_MAX_CHARS", id="text-max-zero"),
        pytest.param({"FLASHWIRE_DEFAULT_TTL_S": "1h"}, "FLASHWIRE_DEFAULT_TTL_S", id="ttl-not-int"),
        pytest.param({"FLASHWIRE_HEARTBEAT_S": "fast"}, "FLASHWIRE_HEARTBEAT_S", id="heartbeat-not-number"),
        pytest.param({"FLASHWIRE_HEARTBEAT_S": "0"}, "FLASHWIRE_HEARTBEAT_S", id="heartbeat-zero"),
        pytest.param({"FLASHWIRE_OUTBOX_MAX_FRAMES": "0"}, "FLASHWIRE_OUTBOX_MAX_FRAMES", id="outbox-zero"),
        pytest.param({"FLASHWIRE_MAX_CONNECTIONS": "many"}, "FLASHWIRE_MAX_CONNECTIONS", id="max-conn"),
        pytest.param({"FLASHWIRE_TICKER_RETENTION": "5"}, "FLASHWIRE_TICKER_RETENTION", id="retention-small"),
        pytest.param({"FLASHWIRE_CLAIM_IDLE_MS": "10"}, "FLASHWIRE_CLAIM_IDLE_MS", id="claim-idle-small"),
        pytest.param({"FLASHWIRE_EDITIONS": "en,e n"}, "FLASHWIRE_EDITIONS", id="edition-space"),
        pytest.param({"FLASHWIRE_EDITIONS": "en,<ar>"}, "FLASHWIRE_EDITIONS", id="edition-markup"),
        pytest.param({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL", id="redis-url-scheme"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A malformed environment variable fails at start-up with a SettingsError naming it."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert variable in str(caught.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_settings_reject_non_finite_heartbeat(value: str) -> None:
    """FLASHWIRE_HEARTBEAT_S must be a finite positive number."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLASHWIRE_HEARTBEAT_S": value})
    assert "FLASHWIRE_HEARTBEAT_S" in str(caught.value)


def test_settings_reject_port_out_of_range() -> None:
    """FLASHWIRE_PORT above 65535 fails at start-up naming the variable."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLASHWIRE_PORT": "70000"})
    assert "FLASHWIRE_PORT" in str(caught.value)


# -- flashwire.service.tokens ------------------------------------------------------------


def _token(role: str, *editions: str) -> Token:
    return Token(
        id="abc",
        name="Amal",
        role=role,
        editions=editions,
        secret_sha256="0" * 64,
        created_at="2026-01-01T00:00:00Z",
    )


def test_token_may_follows_role_and_edition_scope() -> None:
    """Editors post and correct, chiefs and admins also retract, only within their editions ('*' = all)."""
    editor = _token("editor", "en")
    assert editor.may("post", "en") and editor.may("correct", "en")
    assert not editor.may("retract", "en")
    assert not editor.may("post", "ar")

    chief = _token("chief", "en", "es")
    assert all(chief.may(action, e) for action in ("post", "correct", "retract") for e in ("en", "es"))
    assert not chief.may("retract", "ar")

    admin = _token("admin", "*")
    assert all(admin.may(action, e) for action in ("post", "correct", "retract") for e in ("en", "ar", "es"))
    roving_editor = _token("editor", "*")
    assert roving_editor.may("post", "ar") and not roving_editor.may("retract", "ar")

    assert not _token("viewer", "*").may("post", "en")  # unknown role: nothing
    assert not admin.may("delete", "en")  # unknown action: nothing
    assert "secret_sha256" not in editor.public()


# -- flashwire.workers.apply: exactly once -----------------------------------------------


def _action(kind: str, line_id: str, at: int, **extra: Any) -> bytes:
    """A desk entry's `a` field, shaped as service/api.py writes it."""
    return orjson.dumps(
        {
            "action": kind,
            "id": line_id,
            "edition": "en",
            "at": at,
            "by": {"token": "t1", "name": "Amal"},
            **extra,
        }
    )


def _post(line_id: str, text: str, at: int) -> bytes:
    line = {
        "text": text,
        "urgency": "urgent",
        "topics": ["politics"],
        "url": None,
        "expires_at_ms": at + 3_600_000,
    }
    return _action("post", line_id, at, line=line)


async def _ticker(redis: Redis, keys: Keys) -> list[tuple[str, dict[str, Any]]]:
    entries = await redis.xrange(keys.ticker("en"))
    return [(fields[b"t"].decode(), orjson.loads(fields[b"d"])) for _, fields in entries]


async def test_applier_applies_each_desk_entry_exactly_once(redis_server: RedisProcess) -> None:
    """Two racing appliers, then repeated applies, leave exactly one ticker event per desk entry, in order."""
    keys = Keys("fw")
    settings = Settings(redis_url=redis_server.url, node_name="test")
    first, second = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        at = now_ms()
        await first.xadd(keys.desk, {"a": _post("en-1", "Death toll rises to 12.", at)})
        correction = {"text": "Death toll rises to 21."}
        last = (
            await first.xadd(keys.desk, {"a": _action("correct", "en-1", at + 5, changes=correction)})
        ).decode()

        a, b = Applier(first, keys, settings), Applier(second, keys, settings)
        done = await asyncio.gather(a.apply_through(last), b.apply_through(last))
        assert sum(done) == 2
        # A worker that crashed after writing but before acknowledging applies the entries again.
        assert await a.apply_through(last) == 0
        assert await b.apply_through(last) == 0
        assert await asyncio.gather(a.apply_through(last), b.apply_through(last)) == [0, 0]

        events = await _ticker(first, keys)
        assert [(kind, body["line"]["id"], body["line"]["version"]) for kind, body in events] == [
            ("line", "en-1", 1),
            ("update", "en-1", 2),
        ]
        assert events[1][1]["line"]["text"] == "Death toll rises to 21."
        assert await a.applied_cursor() == last
        state = orjson.loads(await first.get(keys.line("en-1")))
        assert (state["version"], state["text"]) == (2, "Death toll rises to 21.")
        assert await first.llen(keys.history("en-1")) == 2
        assert await first.zrange(keys.live("en"), 0, -1) == [b"en-1"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_many_racing_appliers_keep_desk_order(redis_server: RedisProcess) -> None:
    """Four appliers racing over 120 posts and corrections produce exactly one event each, in desk order."""
    keys = Keys("fw")
    settings = Settings(redis_url=redis_server.url, node_name="test")
    clients = [Redis.from_url(redis_server.url) for _ in range(4)]
    try:
        at = now_ms()
        expected: list[tuple[str, str, int]] = []
        last = ""
        for i in range(60):
            await clients[0].xadd(keys.desk, {"a": _post(f"en-{i}", f"Line {i}.", at + i)})
            expected.append(("line", f"en-{i}", 1))
            target = f"en-{i // 2}"
            fix = _action("correct", target, at + i, changes={"text": f"Line {i // 2}, corrected."})
            last = (await clients[0].xadd(keys.desk, {"a": fix})).decode()
            expected.append(("update", target, 2 if i % 2 == 0 else 3))

        appliers = [Applier(client, keys, settings) for client in clients]
        done = await asyncio.gather(*(applier.apply_through(last) for applier in appliers))
        assert sum(done) == 120
        events = await _ticker(clients[0], keys)
        assert [(kind, body["line"]["id"], body["line"]["version"]) for kind, body in events] == expected
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\ufeff", "\u2066"])
def test_invisible_format_characters_are_refused(char: str) -> None:
    """Bidi overrides and zero-width characters cannot disguise a headline."""
    with pytest.raises(ValidationError) as caught:
        parse_post({"edition": "en", "text": f"Fire{char}drill"}, SETTINGS)
    assert caught.value.field == "text"


def test_topic_configuration_must_be_slugs() -> None:
    """A section configured as 'Politics' fails at start-up naming the variable."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLASHWIRE_SECTIONS": "Politics,economy"})
    assert "FLASHWIRE_SECTIONS" in str(caught.value)


def test_a_connection_lost_while_watching_is_an_outage_for_the_worker() -> None:
    """redis-py reports a connection lost during arq's WATCH (enqueue_job) as a WatchError; the worker's
    parts must wait it out like any lost connection, not log it as an unexpected error."""
    from redis.exceptions import WatchError

    from flashwire.workers.outage import REDIS_DOWN

    assert isinstance(WatchError("A ConnectionError occurred on while watching one or more keys"), REDIS_DOWN)
