"""flashwire.core.lines: what a post, a correction and a retraction may hold, and the field each
refusal names."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from flashwire.core.clock import now_ms
from flashwire.core.lines import ValidationError, parse_correction, parse_post, parse_retraction
from flashwire.core.settings import Settings
from flashwire.core.text import TextRuleError, http_url

SETTINGS = Settings(node_name="test")


def future_iso(hours: float = 1.0) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def field_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return exc.value.field


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


def test_the_url_rule_accepts_http_and_https_only() -> None:
    """http(s) links of any case pass unchanged (flashwire.core.text.http_url); others are refused."""
    assert http_url("HTTPS://Example.com/a?b=c#d") == "HTTPS://Example.com/a?b=c#d"
    assert http_url("http://example.com") == "http://example.com"
    for refused in ("ftp://example.com/", "javascript:alert(1)", "//example.com/"):
        with pytest.raises(TextRuleError):
            http_url(refused)


def test_parse_correction_keeps_only_changed_fields() -> None:
    """A correction returns only the fields sent, validated; expiry becomes epoch ms; url may be cleared."""
    correction = parse_correction({"text": "  Death toll   rises to 21. ", "url": None}, SETTINGS)
    assert correction.model_dump() == {"text": "Death toll rises to 21.", "url": None}
    later = parse_correction(
        {"expires_at": future_iso(2), "urgency": "urgent", "topics": ["europe"]}, SETTINGS
    )
    assert set(later.model_dump()) == {"expires_at_ms", "urgency", "topics"}
    assert later.expires_at_ms is not None and later.expires_at_ms > now_ms() + 3600 * 1000
    assert later.topics == ["europe"]


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


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\ufeff", "\u2066"])
def test_invisible_format_characters_are_refused(char: str) -> None:
    """Bidi overrides and zero-width characters cannot disguise a headline."""
    with pytest.raises(ValidationError) as caught:
        parse_post({"edition": "en", "text": f"Fire{char}drill"}, SETTINGS)
    assert caught.value.field == "text"
