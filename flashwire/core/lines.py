"""The breaking line: urgency scale, and validation of what editors send.

Validation is strict and names the offending field as the client sent it
(`text`, `topics[0]`, `body`), because an editor under pressure needs to know
exactly what to fix, and because nothing malformed may ever reach the desk
stream. The rules themselves are the request models of flashwire/core/models.py
(pydantic v2); this module turns their verdict into one `ValidationError` and
into the values the desk needs (times in epoch ms, the default expiry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import pydantic
from pydantic_core import ErrorDetails

from flashwire.core.clock import INSTANT_MAX_MS, now_ms
from flashwire.core.models import LineChanges, Urgency, request_models
from flashwire.core.settings import Settings

__all__ = [
    "SHORT_TEXT_CHARS",
    "URGENCY_RANK",
    "PostRequest",
    "ValidationError",
    "parse_correction",
    "parse_expiry",
    "parse_post",
    "parse_retraction",
    "validate",
]

URGENCY_RANK: dict[str, int] = {"flash": 0, "urgent": 1, "routine": 2}
# Wire practice (AFP): alerts for tickers and pushes aim at 55 characters. Warn, don't block.
SHORT_TEXT_CHARS = 55

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


class ValidationError(ValueError):
    """A request field is invalid; `field` names it as the client sent it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _field_name(loc: tuple[int | str, ...]) -> str:
    """('topics', 0) -> 'topics[0]'; () -> 'body' (the request body as a whole)."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or "body"


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return "must be a JSON object"
    if kind == "string_type":
        return "must be a string"
    if kind == "list_type":
        return "must be a list"
    if kind == "literal_error":
        return f"must be one of {str(ctx.get('expected', '')).replace(chr(39), '').replace(' or ', ', ')}"
    if kind == "too_short":
        return "must not be empty"
    message = error["msg"]
    return message[:1].lower() + message[1:]


def from_pydantic(exc: pydantic.ValidationError) -> ValidationError:
    """The one error to report: an unknown field first (as the client most likely misspelt it),
    else the first in field order. A model-level rule names its field in ctx['field']."""
    errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    field = str((error.get("ctx") or {}).get("field") or _field_name(error["loc"]))
    return ValidationError(field, _message(error))


def validate(model: type[ModelT], body: object) -> ModelT:
    """`body` (parsed JSON) as `model`, or ValidationError naming the first field at fault."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc) from None


@dataclass(frozen=True)
class PostRequest:
    """A validated new line (times in epoch ms; the default expiry applied)."""

    edition: str
    text: str
    urgency: Urgency
    topics: tuple[str, ...]
    url: str | None
    source: str | None
    expires_at_ms: int
    embargo_until_ms: int | None


def parse_post(body: object, settings: Settings, edition: str | None = None) -> PostRequest:
    """Validate a new line; `edition` from the URL, if given, is the default for the body's."""
    if isinstance(body, dict) and edition is not None:
        body = {"edition": edition, **body}
    post = validate(request_models(settings).post, body)
    starts_ms = post.embargo_until or now_ms()
    # The default expiry of a line embargoed until the last hours of year 9999 stops at the last
    # instant a line can carry (flashwire/core/clock.py), rather than fail to be written.
    expires_at_ms = post.expires_at or min(starts_ms + settings.default_ttl_s * 1000, INSTANT_MAX_MS)
    if expires_at_ms <= starts_ms:
        if post.expires_at is None:  # an embargo until the very last instant: no room to expire
            raise ValidationError("embargo_until", "must be earlier: the line needs time to expire after it")
        raise ValidationError("expires_at", "must be after the embargo time")
    return PostRequest(
        edition=post.edition,
        text=post.text,
        urgency=post.urgency,
        topics=tuple(post.topics),
        url=post.url,
        source=post.source,
        expires_at_ms=expires_at_ms,
        embargo_until_ms=post.embargo_until,
    )


def parse_correction(body: object, settings: Settings) -> LineChanges:
    """Validate a correction; at least one field must change. Only the fields the editor sent are
    set (and serialised): `url: null` clears the link, no `url` leaves it (expiry in epoch ms)."""
    return validate(request_models(settings).correction, body).changes()


def parse_retraction(body: object) -> str:
    """Validate a retraction; returns the (optional) public reason, "" for none."""
    if body is None:
        return ""
    return validate(request_models(Settings()).retraction, body).reason


def parse_expiry(body: object) -> int:
    """Validate a change of expiry: {"expires_at": <future RFC 3339 time>}; returns epoch ms."""
    return validate(request_models(Settings()).expiry, body).expires_at
