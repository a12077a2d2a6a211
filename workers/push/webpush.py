"""The Web Push sender: RFC 8030 delivery, RFC 8291 message encryption, RFC 8292 VAPID.

One `WebPushSender` per worker process. pywebpush encrypts each message (aes128gcm, a fresh
ephemeral key per message as RFC 8291 §3.1 requires) and posts it through the sender's one
aiohttp session, so connections to a push service are reused (../shared/PITFALLS.md 1.10); the
VAPID header is signed once per push-service origin and reused until it nears expiry
(`vapid.VapidSigner`).

Per message (`push_headers`):
- `TTL` from `Alert.ttl_s`, never 0 (RFC 8030 §5.2; pywebpush defaults to 0: PITFALLS 1.1);
- `Urgency` `high` or `normal` from `Alert.priority` (RFC 8030 §5.3);
- `Topic` from `Alert.topic`, checked to be ≤ 32 base64url characters (RFC 8030 §5.4;
  PITFALLS 1.8), so a correction or withdrawal replaces the line's undelivered alert;
- for Windows (WNS, `*.notify.windows.com`) only: `X-WNS-Type: wns/raw` (the body is the
  encrypted octets, not toast XML) and `X-WNS-Cache-Policy: cache` to match the TTL
  (PITFALLS 1.11; pywebpush#162); other services may refuse these headers.

Answers (base.Outcome): 2xx accepted; 404/410 gone (RFC 8030 §7.3, PITFALLS 1.9); 429 and 5xx
retry with the `Retry-After` (RFC 8030 §8.4); 413 and every other status failed; a timeout or a
connection error retry. A payload whose JSON is over base.PAYLOAD_MAX_BYTES, a Topic that is not
RFC 8030's, or a subscription whose endpoint or keys are unusable is failed without a request.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import orjson
from pywebpush import WebPusher, WebPushException

from flashwire.core.vapid import generate_vapid_key_pem, vapid_public_key

from .base import PAYLOAD_MAX_BYTES, TOPIC_LENGTH, Alert, Outcome, Platform, Target, retry_after_seconds
from .vapid import VapidSigner, origin_of

__all__ = ["WebPushSender", "generate_vapid_key_pem", "push_headers", "vapid_public_key"]

_TOPIC = re.compile(rf"^[A-Za-z0-9_-]{{1,{TOPIC_LENGTH}}}$")
_WNS_SUFFIX = ".notify.windows.com"


def is_wns(endpoint: str) -> bool:
    """Whether `endpoint` is a Windows Push Notification Services URL (Edge on Windows)."""
    host = (origin_of(endpoint).split("://", 1)[1]).split(":", 1)[0]
    return host.endswith(_WNS_SUFFIX)


def push_headers(endpoint: str, alert: Alert) -> dict[str, str]:
    """The RFC 8030 headers of one push of `alert` to `endpoint`, TTL aside (pywebpush sets it).

    Raises ValueError if the alert's Topic is not ≤ 32 base64url characters, or if the endpoint
    is not an http(s) URL.
    """
    topic = alert.topic
    if not _TOPIC.match(topic):
        raise ValueError(f"Topic must be 1-{TOPIC_LENGTH} base64url characters, got {topic!r}")
    headers = {"Urgency": alert.priority, "Topic": topic}
    if is_wns(endpoint):
        headers["X-WNS-Type"] = "wns/raw"
        headers["X-WNS-Cache-Policy"] = "cache"
    return headers


def _status(response: Any) -> int:
    # PITFALLS 1.10: aiohttp's response has `.status`, requests' `.status_code`.
    return int(getattr(response, "status", None) or response.status_code)


class WebPushSender:
    """Sends alerts to Web Push subscriptions (base.PushSender).

    :param vapid_private_key_pem: the application server's P-256 key, PEM
        (`generate_vapid_key_pem`); browsers subscribed with its `vapid_public_key`.
    :param subject: the VAPID `sub`, a real `mailto:` or `https:` contact (ValueError otherwise:
        vapid.validate_subject).
    :param timeout_s: limit on one request: connection, request and answer together (PITFALLS 1.2).
    :param max_connections: requests (and so connections) open at once, over all push services;
        more concurrent `send` calls wait their turn before their timeout starts.

    No I/O at construction: the HTTP session opens on the first send.
    """

    platform: Platform = "webpush"

    def __init__(
        self,
        *,
        vapid_private_key_pem: str,
        subject: str,
        timeout_s: float = 10,
        max_connections: int = 100,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.signer = VapidSigner(private_key_pem=vapid_private_key_pem, subject=subject)
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # Sends wait here, outside the timeout, rather than in aiohttp's pool, where the wait for
        # a free connection would count against `timeout_s` and turn a long queue into timeouts.
        self._slots = asyncio.Semaphore(max_connections)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("WebPushSender is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                timeout=self._timeout,
            )
        return self._session

    async def send(self, target: Target, alert: Alert) -> Outcome:
        """Send `alert` to the subscription `target`; never raises for network or service faults."""
        now_s = time.time()
        body = orjson.dumps(alert.payload())
        if len(body) > PAYLOAD_MAX_BYTES:
            return Outcome("failed", detail="payload-too-large")
        try:
            headers = push_headers(target.token, alert)
            headers["Authorization"] = self.signer.authorization(origin_of(target.token), now_s)
            pusher = WebPusher(
                {"endpoint": target.token, "keys": {"p256dh": target.p256dh, "auth": target.auth}},
                aiohttp_session=self._client(),
            )
        except (ValueError, WebPushException):
            # An endpoint that is not an http(s) URL, or p256dh/auth that are not base64url.
            return Outcome("failed", detail="bad-subscription")
        try:
            async with self._slots:
                response = await pusher.send_async(
                    data=body,
                    headers=headers,
                    ttl=alert.ttl_s(time.time()),
                    # Explicit on every call (PITFALLS 1.2): pywebpush passes its own 10,000 s otherwise.
                    timeout=self._timeout,
                )
        except (ValueError, WebPushException):
            # The subscription's p256dh is not a P-256 point: encryption failed before sending.
            return Outcome("failed", detail="bad-subscription")
        except TimeoutError:  # aiohttp's ClientTimeout (asyncio.TimeoutError is TimeoutError)
            return Outcome("retry", detail="timeout")
        except aiohttp.ClientError as error:
            return Outcome("retry", detail=f"connection: {type(error).__name__}")
        return self._outcome(_status(response), response.headers.get("Retry-After"), now_s)

    @staticmethod
    def _outcome(status: int, retry_after: str | None, now_s: float) -> Outcome:
        if 200 <= status < 300:
            return Outcome("accepted", detail=str(status))
        if status in (404, 410):
            return Outcome("gone", detail=str(status))
        if status == 429 or status >= 500:
            return Outcome("retry", retry_after_s=retry_after_seconds(retry_after, now_s), detail=str(status))
        return Outcome("failed", detail=str(status))

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent); the sender is not used afterwards."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
