"""The contract as types: the line, the desk actions, and every newsroom API request and response.

One set of pydantic v2 models is the single source of truth: requests are validated by them, the
worker builds and stores lines through `Line`, the readers send `Line`, and the OpenAPI document
(service/openapi.py) and the AsyncAPI document are generated from their JSON Schema (2020-12).

Sections:

- the line as stored and as sent to readers (docs/protocol.md section 5);
- desk actions: what the API (and the schedule) put on the desk stream, and the worker applies;
- API responses and the error body;
- API requests, bound to a `Settings` by `request_models(settings)`: the editions, topics and
  limits they check are configuration, so a request model is built once per configuration and
  its JSON Schema carries the configured values (nothing is copied by hand into the document).

Free text goes through the one text rule and links through the one URL rule of
flashwire/core/text.py, whatever field they arrive in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    WithJsonSchema,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flashwire.core.clock import INSTANT_MAX_MS, INSTANT_MIN_MS, iso_from_ms, ms_from_iso, now_ms
from flashwire.core.settings import TOPIC_SLUG, Settings
from flashwire.core.text import URL_MAX_CHARS, TextRuleError, free_text, http_url

Urgency = Literal["flash", "urgent", "routine"]
# `withheld` (under embargo) is stored and shown to the desk, never sent to readers.
LineStatus = Literal["usable", "withheld", "canceled"]
Direction = Literal["ltr", "rtl"]
# IPTC urgency (1 highest) of flash, urgent, routine (IPTC NewsCodes "urgency").
IptcUrgency = Literal[1, 3, 5]
URGENCY_IPTC: dict[str, int] = {"flash": 1, "urgent": 3, "routine": 5}
# `partner`: registers webhook endpoints (docs/webhooks.md); no desk actions.
Role = Literal["editor", "chief", "admin", "partner"]
Timestamp = Annotated[
    str,
    Field(
        description="RFC 3339 UTC with milliseconds (flashwire.core.clock.iso_from_ms)",
        examples=["2026-11-25T16:40:00.123Z"],
    ),
]

# RFC 3339 section 5.6 `date-time` (the JSON Schema "date-time" format): Python's fromisoformat
# alone also takes ISO 8601 forms such as 20261125T180000Z, which the published schema does not.
RFC3339_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
SOURCE_MAX_CHARS = 120
RETRACT_REASON_MAX_CHARS = 200
TOKEN_NAME_MAX_CHARS = 80


# -- the line -------------------------------------------------------------------------------------


class Line(BaseModel):
    """One version of a line (docs/protocol.md section 5). Unknown stored fields are dropped on
    reading, because readers are told to ignore fields they do not know."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(description="Stable id, '<edition>-<16 hex digits>'; treat it as opaque.")
    version: int = Field(ge=1, description="1 when first written; +1 for each correction and for a kill.")
    revision: int = Field(
        default=1,
        ge=1,
        description="1 when first written; +1 for every change an editor makes to it (correction, pin, "
        "unpin, expiry change, retraction, cancellation), not for the schedule's release or expiry. "
        'The API\'s ETag `"v<revision>"`, which If-Match compares (docs/api.md, "Concurrent changes").',
    )
    edition: str = Field(description="Edition code (BCP 47), e.g. 'en'.")
    language: str = Field(description="BCP 47 language of `text`; currently equal to `edition`.")
    direction: Direction
    text: str = Field(description="The headline, plain text, NFC, whitespace collapsed.")
    urgency: Urgency
    iptc_urgency: IptcUrgency
    topics: list[str] = Field(description="Section and region slugs; may be empty.")
    url: str | None = Field(description="Absolute http(s) link to the full story.")
    source: str | None = Field(description="Attribution given by the desk, plain text.")
    status: LineStatus
    pinned: bool
    published_at: Timestamp
    updated_at: Timestamp
    expires_at: Timestamp
    embargoed: Timestamp | None = Field(description="The embargo time while scheduled; else null.")
    author: str = Field(description="Name of the token that made the latest post, correction or kill.")
    expired: Literal[True] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Present, and true, only on a line removed by expiry.",
    )


LINE_ADAPTER: TypeAdapter[Line] = TypeAdapter(Line)


class Reach(BaseModel):
    """How many readers one version of a line reached, over all nodes (service/reach.py)."""

    readers: int = Field(ge=0)
    ms: int | None = Field(description="Slowest delivery after acceptance, in ms; null before any.")
    nodes: int = Field(ge=0)


class PushReach(BaseModel):
    """The pushes of one version of a line to closed apps (docs/push.md), over every worker."""

    kind: Literal["line", "correction", "withdrawal"] = Field(
        description="line: a new line; correction and withdrawal replace its alert."
    )
    targets: int = Field(ge=0, description="Registrations the fan-out was planned for.")
    accepted: int = Field(ge=0, description="Sends their push service accepted.")
    removed: int = Field(
        ge=0, description="Targets the push service said are gone (their registration removed)."
    )
    failed: int = Field(
        ge=0, description="Sends refused, or still failing at the deadline or after the retries."
    )
    skipped: int = Field(
        ge=0,
        description="Targets not sent: quiet hours, the hourly cap, the deadline passed, or the line"
        " killed before their batch ran.",
    )
    ms: int | None = Field(description="From the desk's acceptance to the end of the last batch, in ms.")


class LineWithReach(Line):
    """A live line with the reach of its current version (null before any delivery is counted)."""

    reach: Reach | None
    push: PushReach | None = Field(description="Pushes of its current version to closed apps; null if none.")


# -- desk actions ---------------------------------------------------------------------------------


class Actor(BaseModel):
    """Who did it: a token (id, name, role), the system (schedule, expiry) or a shell operator."""

    token: str = ""
    name: str
    role: str = ""


# The actor of what the worker's schedule puts on the desk (embargo release, expiry), as the audit
# trail shows it (docs/api.md, "The audit trail"); workers/schedule.py writes it into its scripts.
SYSTEM_ACTOR = Actor(name="scheduler", role="system")


class _DeskAction(BaseModel):
    """Fields every desk stream entry (field `a`, JSON) carries; `at` is epoch ms. An entry the API
    accepted also has field `r`, the line revision it produces (service/desk.py)."""

    id: str
    edition: str
    at: int
    by: Actor = SYSTEM_ACTOR


class NewLine(BaseModel):
    """The validated body of a post, as the worker needs it (times in epoch ms)."""

    text: str
    urgency: Urgency = "routine"
    topics: list[str] = []
    url: str | None = None
    source: str | None = None
    expires_at_ms: int
    embargo_until_ms: int | None = None


class _SentFieldsOnly(BaseModel):
    """Serialises only the fields that were set: a correction's `url: null` (clear the link) is
    not the same as no `url` at all."""

    # No return annotation on purpose: pydantic then publishes the fields' schema, not `any`.
    @model_serializer(mode="wrap")
    def _sent_only(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        return {name: value for name, value in handler(self).items() if name in self.model_fields_set}


class LineChanges(_SentFieldsOnly):
    """The fields a correction changes; only those sent are set (and serialised)."""

    text: str | None = None
    urgency: Urgency | None = None
    topics: list[str] | None = None
    url: str | None = None
    source: str | None = None
    expires_at_ms: int | None = None


class PostAction(_DeskAction):
    action: Literal["post"] = "post"
    line: NewLine


class CorrectAction(_DeskAction):
    action: Literal["correct"] = "correct"
    changes: LineChanges


class RetractAction(_DeskAction):
    action: Literal["retract"] = "retract"
    reason: str = ""


class PinAction(_DeskAction):
    action: Literal["pin", "unpin"]


class ExpiryAction(_DeskAction):
    action: Literal["expiry"] = "expiry"
    expires_at_ms: int


class CancelAction(_DeskAction):
    action: Literal["cancel"] = "cancel"


class ReleaseAction(_DeskAction):
    """Written by the schedule (workers/schedule.py) when an embargo lifts."""

    action: Literal["release"] = "release"
    expected_embargo_ms: int


class ExpireAction(_DeskAction):
    """Written by the expiry sweep (workers/schedule.py) when a line's time is up."""

    action: Literal["expire"] = "expire"
    expected_expires_at_ms: int


DeskAction = Annotated[
    PostAction
    | CorrectAction
    | RetractAction
    | PinAction
    | ExpiryAction
    | CancelAction
    | ReleaseAction
    | ExpireAction,
    Field(discriminator="action"),
]
DESK_ACTION_ADAPTER: TypeAdapter[DeskAction] = TypeAdapter(DeskAction)


# -- API responses --------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """Why a request was refused; `field` names the culprit as the client sent it (`topics[0]`)."""

    status: int = Field(ge=400, le=599)
    code: str = Field(examples=["invalid", "not_found", "forbidden", "conflict", "unauthorized"])
    message: str
    field: str | None = Field(default=None, exclude_if=lambda value: value is None)


class ErrorBody(BaseModel):
    """Every error response: {"error": {status, code, message, field?}}."""

    error: ErrorDetail


class PreconditionFailedBody(ErrorBody):
    """412 to a change whose If-Match no longer matches the line (RFC 9110 section 13.1.1):
    the error (field `If-Match`), the line's current revision and ETag, and its current state."""

    revision: int = Field(ge=1, description="The line's revision now, counting changes already accepted.")
    etag: str = Field(description='The ETag to send as If-Match to change the line now, `"v<revision>"`.')
    line: Line | None = Field(
        description="The line as last applied (it may not show yet a change accepted a moment ago)."
    )


class LinePreview(BaseModel):
    """The line a post will create, as accepted (the worker adds the rest when it applies it)."""

    id: str
    edition: str
    text: str
    urgency: Urgency
    topics: list[str]
    url: str | None
    source: str | None
    expires_at: Timestamp
    embargoed: Timestamp | None


class Replicas(BaseModel):
    """How many replicas acknowledged an action's desk write (Redis WAIT), of how many required."""

    acknowledged: int = Field(ge=0, description="Replicas that had the write when the answer was sent.")
    required: int = Field(ge=1, description="FLASHWIRE_WAIT_REPLICAS: replicas a 201 needs.")


class _Accepted(BaseModel):
    """Every accepted action: 201 once it is in the desk stream (`desk_id` is its entry id), or,
    with FLASHWIRE_WAIT_REPLICAS set, 201 once that many replicas have it too and 202 when fewer
    did in time (docs/api.md "Replicated or not")."""

    id: str
    edition: str
    accepted_at: Timestamp
    desk_id: str = ""
    replicas: Replicas | None = Field(
        default=None,
        description="Present when the server waits for replicas (FLASHWIRE_WAIT_REPLICAS > 0): 201 when"
        " `acknowledged` >= `required`, else 202 (on the primary, not yet on enough replicas). Absent"
        " otherwise: the answer of a single-server deployment is unchanged.",
    )


class PostAccepted(_Accepted):
    action: Literal["post"] = "post"
    scheduled: bool = Field(description="True when `embargo_until` was given: the line waits for it.")
    line: LinePreview


class ChangesAccepted(_SentFieldsOnly):
    """The fields a correction changes, as sent (cleaned); the others are absent."""

    text: str | None = None
    urgency: Urgency | None = None
    topics: list[str] | None = None
    url: str | None = None
    source: str | None = None
    expires_at: Timestamp | None = None


class CorrectionAccepted(_Accepted):
    action: Literal["correct"] = "correct"
    changes: ChangesAccepted


class RetractionAccepted(_Accepted):
    action: Literal["retract"] = "retract"
    reason: str


class ExpiryAccepted(_Accepted):
    action: Literal["expiry"] = "expiry"
    expires_at: Timestamp


class ActionAccepted(_Accepted):
    """Pin, unpin or cancellation: nothing but the action itself."""

    action: Literal["pin", "unpin", "cancel"]


AcceptedResponse = Annotated[
    PostAccepted | CorrectionAccepted | RetractionAccepted | ExpiryAccepted | ActionAccepted,
    Field(discriminator="action"),
]
ACCEPTED_ADAPTER: TypeAdapter[AcceptedResponse] = TypeAdapter(AcceptedResponse)


class LineDetail(BaseModel):
    """GET /api/v1/lines/{line_id}: current state, every version, reach per version."""

    id: str
    edition: str
    line: Line | None = Field(description="Null for the few milliseconds between acceptance and fan-out.")
    history: list[Line]
    reach: dict[str, Reach] = Field(description="Reach per version number ('1', '2', …).")
    push: dict[str, PushReach] = Field(
        description="Pushes per version and kind ('1:line', '2:correction', '3:withdrawal')."
    )


class EditionLines(BaseModel):
    """GET /api/v1/editions/{edition}/lines: live lines, pinned first, newest first, with reach."""

    edition: str
    cursor: str = Field(description="The ticker cursor the list is current at ('0-0' when empty).")
    lines: list[LineWithReach]


class EditionReaders(BaseModel):
    """GET /api/v1/editions/{edition}/readers: readers connected now over every node (service/reach.py).

    Readers over WebSocket and SSE; the desk's own ticker connections (`role=desk`,
    docs/protocol.md 2.4) are not counted, and a reader of several editions counts in each. Each
    node's figure is at most about a second old; a node that stopped is gone from it within 3 s.
    """

    edition: str
    readers: int = Field(ge=0, description="Readers of the edition connected now, all nodes together.")
    nodes: int = Field(ge=0, description="Service nodes whose counts are included.")
    at: Timestamp = Field(description="When the figures were read.")


# GET /api/v1/editions/{edition}/scheduled lists at most this many lines (the soonest); a desk
# schedules a handful at a time, and one answer must stay small.
SCHEDULED_LIST_MAX = 200


class ScheduledLines(BaseModel):
    """GET /api/v1/editions/{edition}/scheduled: lines waiting for their embargo, soonest first."""

    edition: str
    lines: list[Line] = Field(
        max_length=SCHEDULED_LIST_MAX,
        description=f"The soonest {SCHEDULED_LIST_MAX} at most; later ones appear as these are released.",
    )


class TokenRecord(BaseModel):
    """A token as listed (never its secret or hash)."""

    id: str
    name: str
    role: Role
    editions: list[str] = Field(description="Edition codes, or ['*'] for all.")
    created_at: Timestamp
    revoked_at: Timestamp | None


class TokenList(BaseModel):
    tokens: list[TokenRecord]


class CreatedToken(TokenRecord):
    """A new token: `token` is the secret bearer string, shown this once."""

    token: str


class Me(TokenRecord):
    """The presented token, with the actions its role permits."""

    actions: list[str]


class EditionInfo(BaseModel):
    code: str
    name: str
    direction: Direction


class UrgencyInfo(BaseModel):
    name: Urgency
    iptc: IptcUrgency


class Config(BaseModel):
    """GET /api/v1/config: what the desk and clients need to know of the configuration."""

    editions: list[EditionInfo]
    sections: list[str]
    regions: list[str]
    topic_names: dict[str, dict[str, str]] = Field(
        description=(
            "Each section's and region's display name per desk language (en, ar, es), keyed by slug:"
            ' {"us-canada": {"en": "US & Canada", "ar": "...", "es": "..."}}. A slug the catalogue'
            " (flashwire/core/topics.py) does not know is named by the slug with dashes as spaces."
        )
    )
    urgencies: list[UrgencyInfo]
    text_max_chars: int = Field(description="Limit of a headline, in characters (see the request schemas).")
    short_text_chars: int = Field(
        description="Above this a headline is long for a ticker: warn, don't block."
    )
    source_max_chars: int = Field(description="Limit of a line's `source`, in characters.")
    reason_max_chars: int = Field(description="Limit of a retraction's public `reason`, in characters.")
    url_max_chars: int = Field(description="Limit of a line's `url`, in characters.")
    default_ttl_s: int
    heartbeat_s: float


class AuditRecord(BaseModel):
    """One applied action as stored in the audit stream: who, when, where, and the record before
    and after. Line actions carry line versions; token actions (edition '*', line_id '') carry
    token records. The stream entry's id is its `audit_id` once read back (`AuditEntry`).
    """

    at: Timestamp
    actor: Actor
    action: str
    edition: str
    line_id: str
    desk_id: str | None = Field(default=None, exclude_if=lambda value: value is None)
    before: Line | TokenRecord | None
    after: Line | TokenRecord | None
    reason: str | None = Field(default=None, exclude_if=lambda value: value is None)


class AuditEntry(AuditRecord):
    """An audit record as listed: `audit_id` is its stream id, the `before` of the next page."""

    audit_id: str


class AuditPage(BaseModel):
    """GET /api/v1/audit: newest first; pass `next_before` as `before` for the next page."""

    entries: list[AuditEntry]
    next_before: str | None


class Health(BaseModel):
    """GET /healthz (service/health.py): 200 'ok' or 'degraded', 503 'unavailable'."""

    status: Literal["ok", "degraded", "unavailable"]
    node: str
    workers_alive: int | None = Field(
        default=None, exclude_if=lambda value: value is None, description="Absent when 'unavailable'."
    )
    desk_lag_s: float | None = Field(
        default=None, exclude_if=lambda value: value is None, description="Absent when 'unavailable'."
    )
    redis: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Only when 'unavailable': the error talking to Redis.",
    )
    problems: list[str]


class Readiness(BaseModel):
    """GET /readyz (service/health.py): 200 'ready', 503 'unready'."""

    status: Literal["ready", "unready"]
    node: str
    problems: list[str]


# -- API requests ---------------------------------------------------------------------------------


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A model-level error that still names one field (read by flashwire.core.lines.from_pydantic)."""
    return PydanticCustomError("field_error", "{message}", {"field": field, "message": message})


def _text_rule(max_chars: int, *, required: bool) -> Callable[[str], str | None]:
    def clean(value: str) -> str | None:
        try:
            text = free_text(value, max_chars=max_chars)
        except TextRuleError as exc:
            raise PydanticCustomError("text_rule", "{message}", {"message": exc.message}) from None
        if not text and required:
            raise PydanticCustomError("text_rule", "must not be empty")
        return text or None

    return clean


def _url_rule(value: str) -> str:
    try:
        return http_url(value)
    except TextRuleError as exc:
        raise PydanticCustomError("url_rule", "{message}", {"message": exc.message}) from None


INSTANT_RANGE = f"{iso_from_ms(INSTANT_MIN_MS)}..{iso_from_ms(INSTANT_MAX_MS)}"


class InstantOutOfRange(ValueError):
    """A well-formed RFC 3339 time outside INSTANT_RANGE once in UTC."""


def instant_ms(value: str) -> int:
    """An RFC 3339 date-time (section 5.6, RFC3339_DATE_TIME) as epoch ms, within INSTANT_RANGE
    once normalised to UTC (flashwire/core/clock.py); ValueError saying why otherwise.

    The one rule for every time a client sends: the request models' `Instant` and `FutureTime`
    fields (expires_at, embargo_until) and the audit trail's `from` and `to`.
    """
    if not isinstance(value, str) or not RFC3339_DATE_TIME.fullmatch(value):
        raise ValueError("expected a form such as 2026-11-25T18:00:00Z or 2026-11-25T19:00:00+01:00")
    ms = ms_from_iso(value.upper())
    if not INSTANT_MIN_MS <= ms <= INSTANT_MAX_MS:
        raise InstantOutOfRange(f"must be within {INSTANT_RANGE} once in UTC")
    return ms


def _instant_ms(value: object) -> int:
    """`instant_ms` as a pydantic validator: a refusal names the field it is attached to."""
    if not isinstance(value, str):
        raise PydanticCustomError("timestamp", "must be an RFC 3339 timestamp such as 2026-11-25T18:00:00Z")
    try:
        return instant_ms(value)
    except InstantOutOfRange as exc:
        raise PydanticCustomError("timestamp", "{reason}", {"reason": str(exc)}) from None
    except ValueError as exc:
        raise PydanticCustomError(
            "timestamp", "is not a valid RFC 3339 timestamp ({reason})", {"reason": str(exc)}
        ) from None


def _in_future(ms: int) -> int:
    if ms <= now_ms():
        raise PydanticCustomError("timestamp", "must be in the future")
    return ms


def _one_of(values: tuple[str, ...], what: str) -> Any:
    """A string among configured `values`; the JSON Schema lists them as an enum."""

    def check(value: str) -> str:
        if value not in values:
            raise PydanticCustomError("one_of", "{message}", {"message": what.format(value=value)})
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(values)})]


# Text fields of each request: free text by the one rule, with the field's own limit.
def _free_text(max_chars: int, *, required: bool, description: str) -> Any:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_chars, "description": description}
    if required:
        schema["minLength"] = 1
    return Annotated[str, AfterValidator(_text_rule(max_chars, required=required)), WithJsonSchema(schema)]


HttpUrl = Annotated[
    str,
    AfterValidator(_url_rule),
    WithJsonSchema(
        {
            "type": "string",
            "format": "iri",
            "maxLength": URL_MAX_CHARS,
            "description": "An absolute http(s) IRI (RFC 3987: letters beyond ASCII may stand as they"
            " are): a valid host, no credentials, a port in 1-65535 if any, well-formed percent-escapes;"
            " no spaces, none of the characters RFC 3987 excludes, no control, format, private-use,"
            " unassigned or default-ignorable characters (flashwire/core/text.py).",
        }
    ),
]
# Every time a request carries is one of these: an RFC 3339 string on the wire, epoch ms once
# validated, refused (422 naming the field) outside INSTANT_RANGE.
Instant = Annotated[
    int,
    BeforeValidator(_instant_ms),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": f"RFC 3339 with an offset, within {INSTANT_RANGE} in UTC",
        }
    ),
]
FutureTime = Annotated[
    Instant,
    AfterValidator(_in_future),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset, in the future, up to"
            f" {iso_from_ms(INSTANT_MAX_MS)} in UTC",
        }
    ),
]
_TEXT_RULE = (
    " Free text: whitespace runs collapse to one space and the ends are trimmed, then NFC; no control,"
    " format (except LRM, RLM, ALM, ZWNJ, ZWJ), private-use or unassigned characters; must show"
    " something. The limit counts characters (code points) of the text so cleaned, so a value sent"
    " with extra whitespace may be longer than maxLength (flashwire/core/text.py)."
)


# The Idempotency-Key header of every write (docs/api.md, "Retrying safely"): printable ASCII
# without spaces (U+0021-U+007E), so that it is a safe Redis key part and never folds or splits.
IDEMPOTENCY_KEY_MAX_CHARS = 200
IDEMPOTENCY_KEY_RULE = f"must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters, without spaces"
IdempotencyKey = Annotated[
    str,
    Field(
        pattern=rf"^[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}$",
        description=f"1-{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters, without spaces. A retried"
        " request with the same key and the same body gets the first answer again (header"
        " Idempotent-Replayed: true); the same key with another request is a 409.",
    ),
]
IDEMPOTENCY_KEY_ADAPTER: TypeAdapter[str] = TypeAdapter(IdempotencyKey)


class _Request(BaseModel):
    """Requests refuse unknown fields and values of the wrong JSON type (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PostLineRequest(_Request):
    """POST /api/v1/lines. Times are epoch ms once validated (RFC 3339 strings on the wire)."""

    edition: str
    text: str
    urgency: Urgency = "routine"
    topics: list[str] = []
    url: HttpUrl | None = None
    source: str | None = None
    expires_at: FutureTime | None = Field(
        default=None, description="Default: publication + the configured TTL."
    )
    embargo_until: FutureTime | None = Field(
        default=None, description="Schedule the line: readers see it only from this time."
    )

    @model_validator(mode="after")
    def _expires_after_embargo(self) -> PostLineRequest:
        if self.embargo_until is not None and self.expires_at is not None:
            if self.expires_at <= self.embargo_until:
                raise _field_error("expires_at", "must be after the embargo time")
        return self


def _correction_schema(schema: dict[str, Any]) -> None:
    """A correction's field defaults are placeholders for "not sent", not values to publish; what
    the schema must say instead is that at least one field is sent (`_changes_something`)."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["minProperties"] = 1


class CorrectionRequest(_Request):
    """POST /api/v1/lines/{line_id}/corrections: only the fields sent change (`model_fields_set`)."""

    model_config = ConfigDict(json_schema_extra=_correction_schema)

    text: str = ""
    urgency: Urgency = "routine"
    topics: list[str] = []
    url: HttpUrl | None = None
    source: str | None = None
    expires_at: FutureTime = 0

    @model_validator(mode="after")
    def _changes_something(self) -> CorrectionRequest:
        if not self.model_fields_set:
            raise _field_error(
                "body", "must change at least one of text, urgency, topics, url, source, expires_at"
            )
        return self

    def changes(self) -> LineChanges:
        """The sent fields, for the desk action."""
        sent = self.model_dump(include=self.model_fields_set)
        if "expires_at" in sent:
            sent["expires_at_ms"] = sent.pop("expires_at")
        return LineChanges(**sent)


class RetractionRequest(_Request):
    """POST /api/v1/lines/{line_id}/retraction: an optional public reason (empty: none)."""

    reason: Annotated[
        str,
        AfterValidator(_text_rule(RETRACT_REASON_MAX_CHARS, required=False)),
        AfterValidator(lambda value: value or ""),
        WithJsonSchema({"type": "string", "maxLength": RETRACT_REASON_MAX_CHARS, "description": _TEXT_RULE}),
    ] = ""


class ExpiryRequest(_Request):
    """POST /api/v1/lines/{line_id}/expiry: the new expiry time."""

    expires_at: FutureTime


class EmptyRequest(_Request):
    """Pin, unpin and cancellation take no body (or an empty object)."""


class CreateTokenRequest(_Request):
    """POST /api/v1/tokens (admin)."""

    name: str
    role: Role = "editor"
    editions: list[str] = Field(min_length=1, description="Edition codes, or ['*'] for all.")


@dataclass(frozen=True)
class RequestModels:
    """The request models of one configuration: each a subclass of the static model above whose
    settings-dependent fields check (and publish in their JSON Schema) the configured values."""

    post: type[PostLineRequest]
    correction: type[CorrectionRequest]
    retraction: type[RetractionRequest]
    expiry: type[ExpiryRequest]
    empty: type[EmptyRequest]
    create_token: type[CreateTokenRequest]


def _topics(settings: Settings) -> Any:
    def count(value: object) -> object:
        if not isinstance(value, list):
            raise PydanticCustomError("topics", "must be a list of topic slugs")
        if len(value) > settings.max_topics:
            raise PydanticCustomError(
                "topics",
                "has {count} entries; the limit is {limit}",
                {"count": len(value), "limit": settings.max_topics},
            )
        return value

    def slug(value: str) -> str:
        if not TOPIC_SLUG.match(value):
            raise PydanticCustomError("topic", "must be a lower-case slug such as 'politics'")
        if value not in settings.topics:
            raise PydanticCustomError(
                "topic", "{topic} is not a configured section or region", {"topic": repr(value)}
            )
        return value

    topic = Annotated[
        str, AfterValidator(slug), WithJsonSchema({"type": "string", "enum": list(settings.topics)})
    ]
    return Annotated[
        list[topic],
        BeforeValidator(count),
        AfterValidator(lambda topics: list(dict.fromkeys(topics))),
        Field(max_length=settings.max_topics, description="Section and region slugs; duplicates dropped."),
    ]


@functools.cache
def request_models(settings: Settings) -> RequestModels:
    """Build (once per configuration) the request models bound to `settings`."""
    edition = _one_of(settings.editions, f"must be one of {', '.join(settings.editions)}")
    token_edition = _one_of(("*", *settings.editions), "unknown edition {value!r}")
    headline = _free_text(
        settings.text_max_chars,
        required=True,
        description=f"The headline, at most {settings.text_max_chars} characters.{_TEXT_RULE}",
    )
    source = _free_text(
        SOURCE_MAX_CHARS, required=False, description=f"Attribution; empty means none.{_TEXT_RULE}"
    )
    topics = _topics(settings)
    post = create_model(
        "PostLineRequest",
        __base__=PostLineRequest,
        __module__=__name__,
        edition=(edition, ...),
        text=(headline, ...),
        topics=(topics, []),
        source=(source | None, None),
    )
    correction = create_model(
        "CorrectionRequest",
        __base__=CorrectionRequest,
        __module__=__name__,
        text=(headline, ""),
        topics=(topics, []),
        source=(source | None, None),
    )
    token_name = _free_text(
        TOKEN_NAME_MAX_CHARS, required=True, description=f"Who holds the token.{_TEXT_RULE}"
    )
    create_token = create_model(
        "CreateTokenRequest",
        __base__=CreateTokenRequest,
        __module__=__name__,
        name=(token_name, ...),
        editions=(list[token_edition], Field(min_length=1, description="Edition codes, or ['*'].")),  # type: ignore[valid-type]
    )
    return RequestModels(
        post=post,
        correction=correction,
        retraction=RetractionRequest,
        expiry=ExpiryRequest,
        empty=EmptyRequest,
        create_token=create_token,
    )
