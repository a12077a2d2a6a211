"""Push registrations as types: what an app or a page sends to register a device or a browser,
and what it gets back (docs/push.md, "Registering").

A registration names one push target — a Web Push subscription (W3C Push API
`PushSubscription.toJSON()`: endpoint and keys), an FCM registration token, or an APNs device
token — and what the reader wants pushed: editions, topics, a minimum urgency (flash by
default: a push interrupts), the language of the app's interface, and optional quiet hours.

Validation names the field as sent (`subscription.keys.p256dh`), as every request of the API does.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flashwire.core.lines import ValidationError, validate
from flashwire.core.models import Urgency, _one_of, _topics
from flashwire.core.settings import Settings

PushPlatform = Literal["webpush", "fcm", "apns"]
ApnsEnvironment = Literal["production", "development"]
# RFC 8291 section 3: the user agent's P-256 public key, uncompressed (65 bytes, first 0x04),
# and a 16-byte authentication secret; both base64url without padding in PushSubscription.toJSON().
P256DH_BYTES = 65
AUTH_BYTES = 16
ENDPOINT_MAX_CHARS = 1_024
# FCM registration tokens are opaque (about 160 characters today); APNs device tokens are 32 bytes
# as 64 hexadecimal digits today, documented as variable length (Apple: "don't hard-code").
FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{20,4096}")
APNS_TOKEN = re.compile(r"(?:[0-9a-fA-F]{2}){16,100}")
# BCP 47 language tags as browsers and apps report them (`navigator.language`, `Locale`).
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,4}")
CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
SECRET_PREFIX = "fwr_"


def _base64url(expected: int, what: str) -> Any:
    def check(value: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise PydanticCustomError("base64url", f"must be base64url ({what})") from None
        if len(raw) != expected or (expected == P256DH_BYTES and raw[0] != 4):
            raise PydanticCustomError("base64url", f"must be {what}")
        return value

    return Annotated[str, Field(max_length=200), AfterValidator(check)]


class WebPushKeys(BaseModel):
    """`keys` of PushSubscription.toJSON() (W3C Push API; RFC 8291 section 3)."""

    model_config = ConfigDict(extra="forbid")
    p256dh: _base64url(P256DH_BYTES, "an uncompressed P-256 public key: 65 bytes, base64url")  # type: ignore[valid-type]
    auth: _base64url(AUTH_BYTES, "a 16-byte authentication secret, base64url")  # type: ignore[valid-type]


class WebPushSubscription(BaseModel):
    """PushSubscription.toJSON() as a browser gives it: `expirationTime` is taken and ignored."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(max_length=ENDPOINT_MAX_CHARS, description="The push service URL (https).")
    keys: WebPushKeys
    expirationTime: int | None = None  # the W3C name


class QuietHours(BaseModel):
    """A daily window in the reader's own time zone when no new-line alert is pushed (corrections
    and withdrawals of an alert already shown still are). `start` later than `end` spans midnight."""

    model_config = ConfigDict(extra="forbid")
    start: str = Field(
        pattern=f"^{CLOCK_TIME.pattern}$", examples=["22:00"], description="HH:MM, 24-hour clock."
    )
    end: str = Field(
        pattern=f"^{CLOCK_TIME.pattern}$", examples=["07:00"], description="HH:MM, 24-hour clock."
    )
    time_zone: str = Field(examples=["Asia/Qatar"], description="An IANA time zone name.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "time_zone", "must be an IANA time zone such as 'Europe/London'"
            ) from None
        return value

    @model_validator(mode="after")
    def _a_window(self) -> QuietHours:
        if self.start == self.end:
            raise PydanticCustomError(
                "quiet_hours", "start and end must differ", {"field": "quiet_hours.end"}
            )
        return self

    def contains(self, hour: int, minute: int) -> bool:
        """Is the local time hour:minute inside the window ([start, end))?"""
        now = hour * 60 + minute
        start = int(self.start[:2]) * 60 + int(self.start[3:])
        end = int(self.end[:2]) * 60 + int(self.end[3:])
        return start <= now < end if start < end else now >= start or now < end


class RegistrationBase(BaseModel):
    """The fields every registration request carries (edition and topic checks are bound to the
    configuration by `registration_model`)."""

    model_config = ConfigDict(extra="forbid")
    platform: PushPlatform
    subscription: WebPushSubscription | None = Field(default=None, description="Web Push only.")
    token: str | None = Field(default=None, description="FCM registration token, or APNs device token (hex).")
    environment: ApnsEnvironment = Field(
        default="production", description="APNs only: the environment the device token belongs to."
    )
    editions: list[str] = Field(min_length=1)
    topics: list[str] = Field(default=[], description="Any of these sections or regions; empty: all.")
    urgency: Urgency = Field(default="flash", description="The least urgent lines pushed.")
    language: str = Field(default="en", pattern=f"^{LANGUAGE_TAG.pattern}$", max_length=35)
    quiet_hours: QuietHours | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RegistrationBase:
        if self.platform == "webpush":
            if self.subscription is None:
                raise PydanticCustomError("missing", "is required for webpush", {"field": "subscription"})
            if self.token is not None:
                raise PydanticCustomError(
                    "extra", "is for fcm and apns; webpush sends `subscription`", {"field": "token"}
                )
            return self
        if self.token is None:
            raise PydanticCustomError("missing", f"is required for {self.platform}", {"field": "token"})
        if self.subscription is not None:
            raise PydanticCustomError("extra", "is for webpush only", {"field": "subscription"})
        pattern = FCM_TOKEN if self.platform == "fcm" else APNS_TOKEN
        if not pattern.fullmatch(self.token):
            what = (
                "an FCM registration token" if self.platform == "fcm" else "an APNs device token (hex digits)"
            )
            raise PydanticCustomError("token", f"is not {what}", {"field": "token"})
        return self

    @property
    def address(self) -> str:
        """What the push service knows the target by: the endpoint URL, or the token."""
        if self.subscription is not None:
            return self.subscription.endpoint
        return (self.token or "").lower() if self.platform == "apns" else self.token or ""


class UpdateBase(BaseModel):
    """PUT: the reader's choices change; the target does not (a new endpoint or token is a new
    registration)."""

    model_config = ConfigDict(extra="forbid")
    editions: list[str] = Field(min_length=1)
    topics: list[str] = []
    urgency: Urgency = "flash"
    language: str = Field(default="en", pattern=f"^{LANGUAGE_TAG.pattern}$", max_length=35)
    quiet_hours: QuietHours | None = None


@functools.lru_cache(maxsize=8)
def _models(settings: Settings) -> tuple[type[RegistrationBase], type[UpdateBase]]:
    edition = _one_of(settings.editions, f"must be one of {', '.join(settings.editions)}")
    topics = _topics(settings)
    fields: dict[str, Any] = {
        "editions": (list[edition], Field(min_length=1, max_length=len(settings.editions))),  # type: ignore[valid-type]
        "topics": (topics, []),
    }
    registration = create_model(
        "PushRegistrationRequest", __base__=RegistrationBase, __module__=__name__, **fields
    )
    update = create_model("PushRegistrationUpdate", __base__=UpdateBase, __module__=__name__, **fields)
    return registration, update


def registration_model(settings: Settings) -> type[RegistrationBase]:
    """The registration request model bound to the configured editions and topics."""
    return _models(settings)[0]


def update_model(settings: Settings) -> type[UpdateBase]:
    """The update request model bound to the configured editions and topics."""
    return _models(settings)[1]


def parse_registration(body: object, settings: Settings) -> RegistrationBase:
    """A validated registration request; ValidationError (flashwire/core/lines.py) naming the field.

    Beyond the shape: the platform must be configured, and a Web Push endpoint must be an https
    URL on one of FLASHWIRE_WEBPUSH_HOSTS (the worker POSTs to it: no other host, RFC 8030 §5)."""
    request = validate(registration_model(settings), body)
    if request.platform not in settings.push_platforms:
        enabled = ", ".join(settings.push_platforms) or "none"
        raise ValidationError(
            "platform", f"{request.platform} is not enabled on this server (enabled: {enabled})"
        )
    if request.subscription is not None:
        problem = endpoint_problem(request.subscription.endpoint, settings.webpush_hosts)
        if problem:
            raise ValidationError("subscription.endpoint", problem)
    return request


def parse_update(body: object, settings: Settings) -> UpdateBase:
    """A validated update of a registration's choices; ValidationError naming the field."""
    return validate(update_model(settings), body)


def endpoint_problem(endpoint: str, hosts: tuple[str, ...]) -> str:
    """Why a Web Push endpoint is refused, or "" if it is acceptable: https on an allowed host
    (or a subdomain of one), on the default port (a port that drops packets would hold a send
    slot for the whole timeout on every alert). A host given with a port in
    FLASHWIRE_WEBPUSH_HOSTS ("127.0.0.1:8443") allows that port only, and then plain http too:
    local push services in development and tests."""
    try:
        parts = urlsplit(endpoint)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "must be an absolute https URL"
    if parts.username or parts.password or not host:
        return "must be an absolute https URL without credentials"
    for allowed in hosts:
        if ":" in allowed:
            if parts.scheme in ("http", "https") and f"{host}:{port}" == allowed:
                return ""
        elif (
            parts.scheme == "https"
            and port in (None, 443)
            and (host == allowed or host.endswith("." + allowed))
        ):
            return ""
    return "must be an https URL of a browser push service (" + ", ".join(hosts) + ")"


class RegistrationView(BaseModel):
    """A registration as its owner reads it back (never the secret, never the keys)."""

    id: str
    platform: PushPlatform
    environment: ApnsEnvironment | None = None
    editions: list[str]
    topics: list[str]
    urgency: Urgency
    language: str
    quiet_hours: QuietHours | None
    registered_at: str = Field(description="RFC 3339 UTC: when this target was (last) registered.")


class RegistrationCreated(RegistrationView):
    """201 (a new target) or 200 (the same target registered again: its choices replaced and a
    new secret issued, the old one no longer valid)."""

    secret: str = Field(
        description="Send as `Authorization: Bearer <secret>` to read, change or delete this"
        " registration. Shown once; only its hash is kept."
    )


class PushConfig(BaseModel):
    """GET /api/v1/push: what a client needs before it registers."""

    platforms: list[PushPlatform] = Field(description="The platforms this server pushes to.")
    vapid_public_key: str | None = Field(
        description="Web Push: the applicationServerKey for PushManager.subscribe() (base64url, an"
        " uncompressed P-256 point, RFC 8292 section 3.2); null when Web Push is off."
    )
    editions: list[str]
    topics: list[str]
    default_urgency: Urgency = "flash"
