"""What every push sender is given (one target, one alert) and what it answers (an outcome).

A sender speaks one platform's protocol: Web Push (RFC 8030, with RFC 8291 message encryption
and RFC 8292 VAPID), Firebase Cloud Messaging HTTP v1, or APNs (HTTP/2, token-based provider
authentication). It is built once per worker process and reused for every send (one HTTP
connection pool, one provider token refreshed on its schedule: ../shared/PITFALLS.md 1.10, 1.12).

`send` never raises for what the network or the push service does: it answers an `Outcome`,
and the fan-out (workers/push/fanout.py) decides what follows — remove the target, retry it
later, or count it failed.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

Platform = Literal["webpush", "fcm", "apns"]
PLATFORMS: tuple[Platform, ...] = ("webpush", "fcm", "apns")

AlertKind = Literal["line", "correction", "withdrawal"]
"""`line`: a new line; `correction`: a corrected line, replacing the alert of its earlier
version; `withdrawal`: a killed line, replacing its alert with a notice that it was withdrawn."""

Priority = Literal["high", "normal"]

# Platform limits this module's payloads stay well inside (PITFALLS 1.7, 1.19, 1.25): Firefox on
# Android refuses Web Push bodies over 3,070 bytes, APNs and FCM payloads over 4,096 bytes.
PAYLOAD_MAX_BYTES = 2_048
# RFC 8030 §5.4: a Topic is at most 32 characters of the URL-safe base64 alphabet.
TOPIC_LENGTH = 32
# APNs: apns-collapse-id is at most 64 bytes.
COLLAPSE_ID_MAX_BYTES = 64


@dataclass(frozen=True, slots=True)
class Target:
    """One registered device or browser, as the fan-out hands it to a sender."""

    id: str
    platform: Platform
    # Web Push: the subscription's endpoint URL; FCM: the registration token; APNs: the device
    # token (hexadecimal).
    token: str
    # Web Push only: the subscription's keys (`keys.p256dh`, `keys.auth` of PushSubscription.toJSON(),
    # base64url): the user agent's P-256 public key and the 16-byte authentication secret (RFC 8291).
    p256dh: str = ""
    auth: str = ""
    # APNs only: "production" or "development" (the sandbox); a token belongs to one of them.
    environment: str = "production"
    # When the target was (last) registered, ms since the epoch: an APNs 410 whose `timestamp`
    # is older than this was about an earlier registration and removes nothing (PITFALLS 1.16).
    registered_at_ms: int = 0
    # BCP 47 language of the reader's interface (the alert's own text is in its edition's language).
    language: str = "en"


@dataclass(frozen=True, slots=True)
class Alert:
    """One push of one version of one line, the same for every target of a fan-out.

    `collapse_id` and `topic` are derived from the line id alone, so every alert about a line
    (its correction, its withdrawal) replaces the earlier one wherever the platform collapses:
    Web Push `Topic`, FCM `collapse_key` and notification `tag`, APNs `apns-collapse-id`.
    """

    kind: AlertKind
    line_id: str
    version: int
    edition: str
    # BCP 47 language and direction ("ltr" or "rtl") of `text`.
    language: str
    direction: str
    # The label shown as the notification's title, in the edition's language: "Breaking",
    # "Correction", "Withdrawn"...
    title: str
    text: str
    url: str | None
    # The ticker cursor of the event this alert is for: an app opened from the notification
    # resumes its live connection from here (docs/protocol.md, `since=`).
    cursor: str
    urgency: str
    # Seconds since the epoch after which the push service should drop the alert undelivered.
    expires_at_s: int

    @property
    def collapse_id(self) -> str:
        """The line id (at most 64 bytes, the APNs limit; ids are '<edition>-<16 hex digits>')."""
        return self.line_id[:COLLAPSE_ID_MAX_BYTES]

    @property
    def topic(self) -> str:
        """RFC 8030 §5.4 Topic: base64url(SHA-256(line id)) cut to 32 characters."""
        digest = hashlib.sha256(self.line_id.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:TOPIC_LENGTH]

    @property
    def priority(self) -> Priority:
        """`high` for a new flash or urgent line (wakes the device: Web Push `Urgency: high`,
        APNs priority 10, FCM HIGH); `normal` for the rest, corrections and withdrawals included."""
        return "high" if self.kind == "line" and self.urgency in ("flash", "urgent") else "normal"

    def ttl_s(self, now_s: float) -> int:
        """Seconds the push service may keep the alert for an offline device: never 0 (pywebpush's
        default TTL of 0 drops the alert for every closed browser, PITFALLS 1.1), never negative."""
        return max(1, int(self.expires_at_s - now_s))

    def payload(self) -> dict[str, Any]:
        """The app-facing data, the same on every platform (docs/push.md, "Payload").

        Shape: {"type": "flashwire.alert", "kind", "id", "version", "edition", "lang", "dir",
        "title", "text", "url", "cursor", "urgency"}; serialised it stays under
        PAYLOAD_MAX_BYTES (the line text is at most a few hundred characters).
        """
        return {
            "type": "flashwire.alert",
            "kind": self.kind,
            "id": self.line_id,
            "version": self.version,
            "edition": self.edition,
            "lang": self.language,
            "dir": self.direction,
            "title": self.title,
            "text": self.text,
            "url": self.url,
            "cursor": self.cursor,
            "urgency": self.urgency,
        }


OutcomeStatus = Literal["accepted", "gone", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one send.

    - `accepted`: the push service took the alert (2xx).
    - `gone`: the target no longer exists and its registration is removed: Web Push 404/410,
      FCM `UNREGISTERED` (or `SENDER_ID_MISMATCH`), APNs 410 `Unregistered` (not older than the
      registration). Never for a 400 that may be our own fault (PITFALLS 1.17, 1.25).
    - `retry`: worth sending again (429, 5xx, a timeout, a dropped connection); `retry_after_s`
      is the service's `Retry-After` in seconds when it sent one.
    - `failed`: will not succeed if repeated (any other 4xx); counted and logged, target kept.

    `detail` is the platform's reason as it gave it ("410", "UNREGISTERED", "BadDeviceToken",
    "timeout"), for logs and metrics labels kept short.
    """

    status: OutcomeStatus
    retry_after_s: float | None = None
    detail: str = ""


class PushSender(Protocol):
    """One platform's sender, built once per worker process."""

    platform: Platform

    async def send(self, target: Target, alert: Alert) -> Outcome:
        """Send `alert` to `target`; answer what became of it (never raise for network faults)."""
        ...

    async def aclose(self) -> None:
        """Close connections; the sender is not used afterwards."""
        ...


def retry_after_seconds(value: str | None, now_s: float) -> float | None:
    """RFC 9110 §10.2.3 Retry-After: delay-seconds or an HTTP-date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)
