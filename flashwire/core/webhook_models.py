"""Partner webhooks as types: the message, the endpoint as stored, and the API's requests and answers.

Shared by the service (service/webhooks.py: registration and the admin API) and the worker
(workers/webhooks/: dispatch and delivery); docs/webhooks.md explains them to partners.

A message follows the Standard Webhooks specification (standardwebhooks.com, "Payload
structure"): `{"type", "timestamp", "data"}`, serialised once when it is recorded and sent as
those exact bytes at every attempt (../shared/PITFALLS.md 2.1). Its `webhook-id` is
`msg_<edition>_<cursor>`: the same for every attempt and every replay, and for every endpoint
that gets the event, so a receiver can use it as its idempotency key.
"""

from __future__ import annotations

import base64
import functools
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from flashwire.core.clock import iso_from_ms
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.models import Instant, Line, Timestamp, Urgency, _one_of, _topics
from flashwire.core.settings import Settings
from flashwire.core.text import URL_MAX_CHARS

# -- the message ----------------------------------------------------------------------------------

WebhookType = Literal[
    "line.published",
    "line.corrected",
    "line.pinned",
    "line.unpinned",
    "line.expiry_changed",
    "line.killed",
    "line.expired",
    "line.withdrawn",
]
# Ticker event (type, change or reason) -> message type (docs/protocol.md section 4).
_TYPES: dict[tuple[str, str], WebhookType] = {
    ("line", ""): "line.published",
    ("update", "correction"): "line.corrected",
    ("update", "pin"): "line.pinned",
    ("update", "unpin"): "line.unpinned",
    ("update", "expiry"): "line.expiry_changed",
    ("retract", "killed"): "line.killed",
    ("retract", "expired"): "line.expired",
}


class MessageData(BaseModel):
    """`data` of a message: the edition, the ticker cursor of the event (a reader can resume its
    live connection from it), the line as the API and the readers get it (docs/protocol.md
    section 5) and, by type, the update's `change`, a kill's `reason` and `note`."""

    edition: str
    cursor: str
    line: Line
    change: str | None = Field(default=None, exclude_if=lambda value: value is None)
    reason: str | None = Field(default=None, exclude_if=lambda value: value is None)
    note: str | None = Field(default=None, exclude_if=lambda value: value is None)


class WebhookMessage(BaseModel):
    """The JSON body of every webhook request (Standard Webhooks payload structure)."""

    type: WebhookType
    timestamp: Timestamp = Field(description="When the event happened (its ticker entry), UTC.")
    data: MessageData


def webhook_id(edition: str, cursor: str) -> str:
    """The message id of a ticker event: the `webhook-id` header, stable across attempts and replays."""
    return f"msg_{edition}_{cursor}"


@dataclass(frozen=True, slots=True)
class Message:
    """One message ready to record: its id, type, the exact body bytes, and what filters see."""

    id: str
    type: WebhookType
    body: bytes
    topics: frozenset[str]
    rank: int
    # The line's topics and urgency rank before a correction, when it had other ones.
    previous: tuple[frozenset[str], int] | None = None


def message_of(edition: str, cursor: str, event_type: str, data: dict[str, Any]) -> Message | None:
    """The message of one ticker event (field `t` and the decoded field `d`), or None for an event
    partners are not sent. The body is serialised here, once."""
    key = data.get("reason") if event_type == "retract" else data.get("change", "")
    kind = _TYPES.get((event_type, str(key or "")))
    line = data.get("line")
    if kind is None or not isinstance(line, dict):
        return None
    ms = int(cursor.split("-", 1)[0])
    payload: dict[str, Any] = {"edition": edition, "cursor": cursor, "line": line}
    if event_type == "update":
        payload["change"] = data.get("change")
    elif event_type == "retract":
        payload["reason"] = data.get("reason")
        payload["note"] = data.get("note", "")
    body = orjson.dumps({"type": kind, "timestamp": iso_from_ms(ms), "data": payload})
    previous = data.get("previous")
    before = None
    if isinstance(previous, dict):
        before = (frozenset(previous.get("topics") or ()), URGENCY_RANK.get(str(previous.get("urgency")), 2))
    return Message(
        id=webhook_id(edition, cursor),
        type=kind,
        body=body,
        topics=frozenset(line.get("topics") or ()),
        rank=URGENCY_RANK.get(str(line.get("urgency")), 2),
        previous=before,
    )


def withdrawn(message: Message) -> Message:
    """A correction that took the line out of an endpoint's filter, as that endpoint gets it:
    type `line.withdrawn`, `data.reason` "filtered" (what a reader gets as a `retract`)."""
    body = orjson.loads(message.body)
    body["type"] = "line.withdrawn"
    body["data"]["reason"] = "filtered"
    return Message(message.id, "line.withdrawn", orjson.dumps(body), message.topics, message.rank)


# -- secrets --------------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
# Standard Webhooks: 24 to 64 random bytes; ../shared/PITFALLS.md 2.4.
SECRET_BYTES = 32


def new_secret() -> str:
    """A new signing secret: `whsec_` and the standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_` secret, decoded strictly; ValueError unless it holds 24-64 bytes
    (the library decodes leniently, so a damaged secret would silently sign with another key)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a signing secret holds 24 to 64 bytes, not {len(key)}")
    return key


# -- the endpoint as stored -----------------------------------------------------------------------

EndpointStatus = Literal["active", "disabled"]


class StoredSecret(BaseModel):
    """A signing secret and, for the previous one after a rotation, when it stops signing (ms)."""

    secret: str
    until_ms: int | None = None


class EndpointRecord(BaseModel):
    """An endpoint as kept in Redis (`Keys.webhook_endpoints`); times in epoch ms."""

    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str = Field(description="Id of the token that registered it.")
    owner_name: str
    url: str
    editions: list[str]
    topics: list[str] = []
    min_urgency: Urgency = "routine"
    secrets: list[StoredSecret]
    status: EndpointStatus = "active"
    disabled_reason: str | None = None
    disabled_at_ms: int | None = None
    created_at_ms: int
    updated_at_ms: int

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The secrets that sign now: the current one first, then a previous one in its overlap."""
        return [s.secret for s in self.secrets if s.until_ms is None or s.until_ms > now_ms]

    def wants(self, edition: str, topics: frozenset[str], rank: int) -> bool:
        """Does an event of `edition` with these topics and urgency rank match the filter?"""
        if edition not in self.editions or rank > URGENCY_RANK[self.min_urgency]:
            return False
        return not self.topics or not frozenset(self.topics).isdisjoint(topics)

    def view(self) -> Endpoint:
        """The endpoint as the API shows it (never a secret)."""
        overlap = [s.until_ms for s in self.secrets if s.until_ms is not None]
        return Endpoint(
            id=self.id,
            owner=self.owner,
            owner_name=self.owner_name,
            url=self.url,
            editions=self.editions,
            topics=self.topics,
            min_urgency=self.min_urgency,
            status=self.status,
            disabled_reason=self.disabled_reason,
            disabled_at=iso_from_ms(self.disabled_at_ms) if self.disabled_at_ms is not None else None,
            previous_secret_until=iso_from_ms(max(overlap)) if overlap else None,
            created_at=iso_from_ms(self.created_at_ms),
            updated_at=iso_from_ms(self.updated_at_ms),
        )


# -- API answers ----------------------------------------------------------------------------------


class Endpoint(BaseModel):
    """An endpoint as its owner (and admins) see it."""

    id: str
    owner: str = Field(description="Id of the partner token that registered it.")
    owner_name: str
    url: str
    editions: list[str]
    topics: list[str] = Field(description="Section and region slugs; a line matches any; empty: all.")
    min_urgency: Urgency = Field(description="The least urgency sent: routine (the default) is every line.")
    status: EndpointStatus
    disabled_reason: str | None = Field(
        description="Why it was disabled (last status or error); null if active."
    )
    disabled_at: Timestamp | None
    previous_secret_until: Timestamp | None = Field(
        description="After a rotation: until when the previous secret still signs beside the new one."
    )
    created_at: Timestamp
    updated_at: Timestamp


class CreatedEndpoint(Endpoint):
    """A new endpoint: `secret` is its signing secret, shown this once."""

    secret: str = Field(description="whsec_ and the base64 of 32 random bytes (Standard Webhooks).")


class RotatedSecret(BaseModel):
    """A new signing secret, shown this once; the previous one signs too until `previous_secret_until`."""

    id: str
    secret: str
    previous_secret_until: Timestamp


class EndpointList(BaseModel):
    endpoints: list[Endpoint]


class Attempt(BaseModel):
    """One attempt at delivering a message."""

    at: Timestamp
    status: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    duration_ms: int
    error: str | None = Field(description="What went wrong: 'HTTP 500', a timeout, a refused address.")


DeliveryStatus = Literal["pending", "delivered", "failed"]


class DeliveryRecord(BaseModel):
    """A delivery's outcome and attempts as kept in Redis (`Keys.webhook_delivery`)."""

    status: DeliveryStatus = "pending"
    attempts: list[Attempt] = []


class Delivery(DeliveryRecord):
    """One message in an endpoint's log: `id` is its log entry id (what a replay names)."""

    id: str
    webhook_id: str
    type: WebhookType
    replay: bool
    recorded_at: Timestamp


class DeliveryList(BaseModel):
    """An endpoint's deliveries, newest first; `next_before` is the `before` of the next page."""

    endpoint_id: str
    deliveries: list[Delivery]
    next_before: str | None


class ReplayAccepted(BaseModel):
    """The deliveries a replay appended to the endpoint's log (each keeps its webhook-id)."""

    endpoint_id: str
    replayed: list[str] = Field(description="Ids of the new log entries, in order.")


# -- API requests ---------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


EndpointUrl = Annotated[
    str,
    Field(max_length=URL_MAX_CHARS),
    WithJsonSchema(
        {
            "type": "string",
            "format": "uri",
            "maxLength": URL_MAX_CHARS,
            "description": "An https URL on a public address (docs/webhooks.md,"
            " flashwire/core/webhook_urls.py).",
        }
    ),
]


class RegisterEndpointRequest(_Request):
    """POST /api/v1/webhooks: where to send, and which events."""

    url: EndpointUrl
    editions: list[str] = Field(min_length=1)
    topics: list[str] = []
    min_urgency: Urgency = "routine"


class UpdateEndpointRequest(_Request):
    """PATCH /api/v1/webhooks/{endpoint_id}: only the fields sent change."""

    url: EndpointUrl | None = None
    editions: list[str] | None = None
    topics: list[str] | None = None
    min_urgency: Urgency | None = None


class ReplayRequest(_Request):
    """POST /api/v1/webhooks/{endpoint_id}/replay: one delivery, or every delivery since a time."""

    delivery_id: str | None = Field(default=None, description="A delivery's id, from the deliveries list.")
    since: Instant | None = Field(default=None, description="Every delivery recorded at or after this time.")


@dataclass(frozen=True)
class WebhookRequestModels:
    """The request models bound to a configuration's editions and topics."""

    register: type[RegisterEndpointRequest]
    update: type[UpdateEndpointRequest]
    replay: type[ReplayRequest]


@functools.cache
def webhook_request_models(settings: Settings) -> WebhookRequestModels:
    """Build (once per configuration) the request models whose editions and topics are the configured ones."""
    edition = _one_of(settings.editions, f"must be one of {', '.join(settings.editions)}")
    topics = _topics(settings)
    editions = (list[edition], Field(min_length=1, description="Edition codes."))  # type: ignore[valid-type]
    register = create_model(
        "RegisterEndpointRequest",
        __base__=RegisterEndpointRequest,
        __module__=__name__,
        editions=editions,
        topics=(topics, []),
    )
    update = create_model(
        "UpdateEndpointRequest",
        __base__=UpdateEndpointRequest,
        __module__=__name__,
        editions=(list[edition] | None, Field(default=None, min_length=1)),  # type: ignore[valid-type]
        topics=(topics | None, None),
    )
    return WebhookRequestModels(register=register, update=update, replay=ReplayRequest)
