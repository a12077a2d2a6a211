"""The breaking line: urgency scale, and validation of what editors send.

Validation is strict and names the offending field, because an editor under
pressure needs to know exactly what to fix, and because nothing malformed may
ever reach the desk stream.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flashwire.core.clock import ms_from_iso, now_ms
from flashwire.core.settings import TOPIC_SLUG, Settings

# Urgency names mapped to IPTC urgency numbers (1 is the highest).
URGENCY_IPTC: dict[str, int] = {"flash": 1, "urgent": 3, "routine": 5}
URGENCY_RANK: dict[str, int] = {"flash": 0, "urgent": 1, "routine": 2}
URL_MAX_CHARS = 2048
RETRACT_REASON_MAX_CHARS = 200
# LRM, RLM, Arabic letter mark, ZWNJ, ZWJ.
ALLOWED_FORMAT_CHARS = frozenset("\u200e\u200f\u061c\u200c\u200d")


class ValidationError(ValueError):
    """A request field is invalid; `field` names it as the client sent it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


SOURCE_MAX_CHARS = 120
# Wire practice (AFP): alerts for tickers and pushes aim at 55 characters. Warn, don't block.
SHORT_TEXT_CHARS = 55


@dataclass(frozen=True)
class PostRequest:
    """A validated new line."""

    edition: str
    text: str
    urgency: str
    topics: tuple[str, ...]
    url: str | None
    source: str | None
    expires_at_ms: int
    embargo_until_ms: int | None


@dataclass(frozen=True)
class CorrectionRequest:
    """A validated correction: only the fields the editor changed."""

    changes: dict[str, Any]


def _require_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise ValidationError(name, "is not a known field")


def clean_text(value: object, settings: Settings, field: str = "text") -> str:
    """A headline: a non-empty string of printable characters within the limit."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    text = unicodedata.normalize("NFC", " ".join(value.split()))
    if not text:
        raise ValidationError(field, "must not be empty")
    if len(text) > settings.text_max_chars:
        raise ValidationError(field, f"is {len(text)} characters; the limit is {settings.text_max_chars}")
    for char in text:
        category = unicodedata.category(char)
        # Direction marks and joiners are needed in Arabic text; other format characters
        # (bidi overrides, zero-width spaces) only serve to disguise a headline.
        if category in {"Cc", "Cs", "Co", "Cn"} or (category == "Cf" and char not in ALLOWED_FORMAT_CHARS):
            raise ValidationError(field, f"contains a control or invisible character U+{ord(char):04X}")
    return text


def clean_urgency(value: object) -> str:
    """One of flash / urgent / routine."""
    if not isinstance(value, str) or value not in URGENCY_IPTC:
        raise ValidationError("urgency", "must be one of flash, urgent, routine")
    return value


def clean_topics(value: object, settings: Settings) -> tuple[str, ...]:
    """A list of configured section and region slugs, without duplicates."""
    if not isinstance(value, list):
        raise ValidationError("topics", "must be a list of topic slugs")
    if len(value) > settings.max_topics:
        raise ValidationError("topics", f"has {len(value)} entries; the limit is {settings.max_topics}")
    known = set(settings.topics)
    topics: list[str] = []
    for index, topic in enumerate(value):
        field = f"topics[{index}]"
        if not isinstance(topic, str) or not TOPIC_SLUG.match(topic):
            raise ValidationError(field, "must be a lower-case slug such as 'politics'")
        if topic not in known:
            raise ValidationError(field, f"{topic!r} is not a configured section or region")
        if topic not in topics:
            topics.append(topic)
    return tuple(topics)


def clean_url(value: object) -> str | None:
    """An absolute http(s) link to the full story, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("url", "must be a string or null")
    if len(value) > URL_MAX_CHARS:
        raise ValidationError("url", f"is longer than {URL_MAX_CHARS} characters")
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError("url", "must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"}:
        raise ValidationError("url", "must be an http or https URL")
    if not parts.hostname:
        raise ValidationError("url", "must name a host")
    return value


def clean_source(value: object) -> str | None:
    """Optional attribution ("Reuters", "Ministry of Health"), one short line."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("source", "must be a string or null")
    source = " ".join(value.split())
    if len(source) > SOURCE_MAX_CHARS:
        raise ValidationError("source", f"is longer than {SOURCE_MAX_CHARS} characters")
    for char in source:
        if unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"}:
            raise ValidationError("source", f"contains a control character U+{ord(char):04X}")
    return source or None


def clean_expiry(value: object, field: str = "expires_at") -> int:
    """An RFC 3339 time in the future, as epoch milliseconds."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be an RFC 3339 timestamp such as 2026-11-25T18:00:00Z")
    try:
        expires_ms = ms_from_iso(value)
    except ValueError as exc:
        raise ValidationError(field, f"is not a valid RFC 3339 timestamp ({exc})") from None
    if expires_ms <= now_ms():
        raise ValidationError(field, "must be in the future")
    return expires_ms


def parse_post(body: object, settings: Settings, edition: str | None = None) -> PostRequest:
    """Validate a new line; `edition` from the URL, if given, must match the body."""
    data = _require_object(body)
    _reject_unknown(
        data, {"edition", "text", "urgency", "topics", "url", "source", "expires_at", "embargo_until"}
    )
    chosen = data.get("edition", edition)
    if not isinstance(chosen, str):
        raise ValidationError("edition", "is required")
    if chosen not in settings.editions:
        raise ValidationError("edition", f"must be one of {', '.join(settings.editions)}")
    if "text" not in data:
        raise ValidationError("text", "is required")
    embargo_ms = (
        clean_expiry(data["embargo_until"], "embargo_until")
        if data.get("embargo_until") is not None
        else None
    )
    starts_ms = embargo_ms or now_ms()
    expires_at_ms = (
        clean_expiry(data["expires_at"])
        if data.get("expires_at") is not None
        else starts_ms + settings.default_ttl_s * 1000
    )
    if expires_at_ms <= starts_ms:
        raise ValidationError("expires_at", "must be after the embargo time")
    return PostRequest(
        edition=chosen,
        text=clean_text(data["text"], settings),
        urgency=clean_urgency(data.get("urgency", "routine")),
        topics=clean_topics(data.get("topics", []), settings),
        url=clean_url(data.get("url")),
        source=clean_source(data.get("source")),
        expires_at_ms=expires_at_ms,
        embargo_until_ms=embargo_ms,
    )


def parse_correction(body: object, settings: Settings) -> CorrectionRequest:
    """Validate a correction; at least one field must change."""
    data = _require_object(body)
    _reject_unknown(data, {"text", "urgency", "topics", "url", "source", "expires_at"})
    if not data:
        raise ValidationError(
            "body", "must change at least one of text, urgency, topics, url, source, expires_at"
        )
    changes: dict[str, Any] = {}
    if "text" in data:
        changes["text"] = clean_text(data["text"], settings)
    if "urgency" in data:
        changes["urgency"] = clean_urgency(data["urgency"])
    if "topics" in data:
        changes["topics"] = list(clean_topics(data["topics"], settings))
    if "url" in data:
        changes["url"] = clean_url(data["url"])
    if "source" in data:
        changes["source"] = clean_source(data["source"])
    if "expires_at" in data:
        changes["expires_at_ms"] = clean_expiry(data["expires_at"])
    return CorrectionRequest(changes=changes)


def parse_retraction(body: object) -> str:
    """Validate a retraction; returns the (optional) public reason."""
    if body is None:
        return ""
    data = _require_object(body)
    _reject_unknown(data, {"reason"})
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise ValidationError("reason", "must be a string")
    reason = " ".join(reason.split())
    if len(reason) > RETRACT_REASON_MAX_CHARS:
        raise ValidationError("reason", f"is longer than {RETRACT_REASON_MAX_CHARS} characters")
    return reason


def parse_expiry(body: object) -> int:
    """Validate a change of expiry: {"expires_at": <future RFC 3339 time>}."""
    data = _require_object(body)
    _reject_unknown(data, {"expires_at"})
    if "expires_at" not in data:
        raise ValidationError("expires_at", "is required")
    return clean_expiry(data["expires_at"])
