"""What the typed models cost per editor request: pydantic v2 validation against the hand-written parser.

Validation runs only on the editor write path (POST /api/v1/lines and the follow-ups), never on
fan-out, so the question is whether it is negligible beside the rest of a POST (a Redis round trip
of the desk script, about 100-300 µs on loopback). Both parsers run in the same process on the
same bodies, interleaved, and the report gives µs per request and the ratio.

The baseline is `parse_post` as it was before the models (git 9a8befc, flashwire/core/lines.py),
copied below with what it needs, unchanged but for names; the new path is flashwire.core.lines.
parse_post, which validates with the request model of flashwire/core/models.py and applies the
one text rule (flashwire/core/text.py), which checks more than the baseline did.

    .venv/bin/python -m bench.validation [--rounds 20000]
"""

from __future__ import annotations

import argparse
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flashwire.core.clock import ms_from_iso, now_ms
from flashwire.core.lines import ValidationError, parse_post
from flashwire.core.settings import TOPIC_SLUG, Settings
from flashwire.core.text import TextRuleError, free_text, http_url

# -- the baseline: hand-written validation, git 9a8befc -----------------------------------------

_URGENCY_IPTC = {"flash": 1, "urgent": 3, "routine": 5}
_ALLOWED_FORMAT_CHARS = frozenset("\u200e\u200f\u061c\u200c\u200d")


@dataclass(frozen=True)
class _OldPost:
    edition: str
    text: str
    urgency: str
    topics: tuple[str, ...]
    url: str | None
    source: str | None
    expires_at_ms: int
    embargo_until_ms: int | None


def _old_text(value: object, settings: Settings) -> str:
    if not isinstance(value, str):
        raise ValidationError("text", "must be a string")
    text = unicodedata.normalize("NFC", " ".join(value.split()))
    if not text:
        raise ValidationError("text", "must not be empty")
    if len(text) > settings.text_max_chars:
        raise ValidationError("text", "too long")
    for char in text:
        category = unicodedata.category(char)
        if category in {"Cc", "Cs", "Co", "Cn"} or (category == "Cf" and char not in _ALLOWED_FORMAT_CHARS):
            raise ValidationError("text", f"contains a control or invisible character U+{ord(char):04X}")
    return text


def _old_topics(value: object, settings: Settings) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError("topics", "must be a list of topic slugs")
    if len(value) > settings.max_topics:
        raise ValidationError("topics", "too many")
    known = set(settings.topics)
    topics: list[str] = []
    for index, topic in enumerate(value):
        if not isinstance(topic, str) or not TOPIC_SLUG.match(topic) or topic not in known:
            raise ValidationError(f"topics[{index}]", "unknown")
        if topic not in topics:
            topics.append(topic)
    return tuple(topics)


def _old_url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ValidationError("url", "must be a string")
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError("url", "must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        raise ValidationError("url", "must be an http or https URL")
    return value


def _old_source(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("source", "must be a string or null")
    source = " ".join(value.split())
    if len(source) > 120:
        raise ValidationError("source", "too long")
    for char in source:
        if unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"}:
            raise ValidationError("source", "contains a control character")
    return source or None


def _old_expiry(value: object, field: str = "expires_at") -> int:
    if not isinstance(value, str):
        raise ValidationError(field, "must be an RFC 3339 timestamp")
    try:
        expires_ms = ms_from_iso(value)
    except ValueError:
        raise ValidationError(field, "is not a valid RFC 3339 timestamp") from None
    if expires_ms <= now_ms():
        raise ValidationError(field, "must be in the future")
    return expires_ms


def old_parse_post(body: object, settings: Settings) -> _OldPost:
    """parse_post of git 9a8befc."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    for name in body:
        if name not in {
            "edition",
            "text",
            "urgency",
            "topics",
            "url",
            "source",
            "expires_at",
            "embargo_until",
        }:
            raise ValidationError(name, "is not a known field")
    chosen = body.get("edition")
    if not isinstance(chosen, str) or chosen not in settings.editions:
        raise ValidationError("edition", "is required")
    if "text" not in body:
        raise ValidationError("text", "is required")
    embargo_ms = (
        _old_expiry(body["embargo_until"], "embargo_until") if body.get("embargo_until") is not None else None
    )
    starts_ms = embargo_ms or now_ms()
    expires_at_ms = (
        _old_expiry(body["expires_at"])
        if body.get("expires_at") is not None
        else starts_ms + settings.default_ttl_s * 1000
    )
    urgency = body.get("urgency", "routine")
    if not isinstance(urgency, str) or urgency not in _URGENCY_IPTC:
        raise ValidationError("urgency", "must be one of flash, urgent, routine")
    return _OldPost(
        edition=chosen,
        text=_old_text(body["text"], settings),
        urgency=urgency,
        topics=_old_topics(body.get("topics", []), settings),
        url=_old_url(body.get("url")),
        source=_old_source(body.get("source")),
        expires_at_ms=expires_at_ms,
        embargo_until_ms=embargo_ms,
    )


# -- the run ----------------------------------------------------------------------------------

BODIES: dict[str, dict[str, Any]] = {
    "minimal": {"edition": "en", "text": "Parliament dissolved; elections called for March."},
    "full": {
        "edition": "ar",
        "text": "\u200fعاجل: الرئيس يعلن \u200e2026\u200e موعدًا للانتخابات المبكرة في البلاد",
        "urgency": "flash",
        "topics": ["politics", "mena", "politics"],
        "url": "https://example.com/news/2026/11/25/elections?utm=ticker",
        "source": "  Reuters  ",
        "expires_at": "2999-01-01T00:00:00Z",
    },
    "refused": {"edition": "en", "text": "Parliament dissolved", "topics": ["politics", "kittens"]},
}


def _per_call_us(
    parse: Callable[[object, Settings], object], body: object, settings: Settings, rounds: int
) -> float:
    start = time.perf_counter_ns()
    for _ in range(rounds):
        try:
            parse(body, settings)
        except ValidationError:
            pass
    return (time.perf_counter_ns() - start) / rounds / 1000


def text_rules_only(body: object, settings: Settings) -> None:
    """Just the one text rule and URL rule on the body's text, source and url: their share of the new path."""
    assert isinstance(body, dict)
    try:
        free_text(body["text"], max_chars=settings.text_max_chars)
        if body.get("source") is not None:
            free_text(body["source"], max_chars=120)
        if body.get("url") is not None:
            http_url(body["url"])
    except TextRuleError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20_000, help="calls per body and parser per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the best is kept")
    args = parser.parse_args()
    settings = Settings()
    for body in BODIES.values():  # warm up, and both parsers agree on what is refused
        for parse in (old_parse_post, parse_post):
            _per_call_us(parse, body, settings, 100)
    print(
        "| body | hand-written (µs/request) | pydantic models (µs/request) | ratio | of which text.py rules (µs) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, body in BODIES.items():
        old = new = rules = float("inf")
        for _ in range(args.repeats):
            old = min(old, _per_call_us(old_parse_post, body, settings, args.rounds))
            new = min(new, _per_call_us(parse_post, body, settings, args.rounds))
            rules = min(rules, _per_call_us(text_rules_only, body, settings, args.rounds))
        print(f"| {name} | {old:.1f} | {new:.1f} | {new / old:.2f}x | {rules:.1f} |")


if __name__ == "__main__":
    main()
