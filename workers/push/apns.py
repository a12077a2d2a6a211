"""The APNs sender: alerts to iOS devices over HTTP/2 with token-based provider authentication.

Apple, "Sending notification requests to APNs": one `POST /3/device/<device token>` per alert on
a long-lived HTTP/2 connection to api.push.apple.com (api.sandbox.push.apple.com for
development tokens), with the headers

- `authorization: bearer <provider token>`: an ES256 JWT, header {alg: ES256, kid: key id},
  claims {iss: team id, iat} (Apple, "Establishing a token-based connection to APNs"); signed
  once and reused for `TOKEN_REFRESH_S`: APNs refuses a token older than an hour
  (403 ExpiredProviderToken) and one renewed more often than every 20 minutes
  (429 TooManyProviderTokenUpdates; ../shared/PITFALLS.md 1.12);
- `apns-push-type: alert` (required since iOS 13), `apns-priority` 10 for a high-priority alert
  and 5 otherwise, `apns-expiration` (seconds since the epoch), `apns-collapse-id` (the line id,
  at most 64 bytes, so a correction replaces the alert) and `apns-topic` (the app's bundle id);

and the JSON body {"aps": {"alert": {"title", "body"}, "sound" (high priority only),
"thread-id": edition, "mutable-content": 1}, "flashwire": Alert.payload()}, at most 4,096 bytes
(Apple, "Generating a remote notification").

Answers (Apple, "Handling notification responses from APNs") become an `Outcome`:

| APNs answer | Outcome |
|---|---|
| 200 | accepted |
| 410 Unregistered (`timestamp` ms ≥ the target's `registered_at_ms`) | gone (PITFALLS 1.16) |
| 410 older than the registration | failed, "Unregistered" (the token was registered again since) |
| 400 BadDeviceToken | failed, never gone: usually a sandbox token sent to production (1.17) |
| 403 Expired/InvalidProviderToken | signed anew and sent once more; then failed |
| 429, 5xx | retry, `retry_after_s` from Retry-After when given |
| any other 4xx | failed, with APNs' reason |
| no answer within `timeout_s` | retry, "timeout" (PITFALLS 1.14) |
| a dropped connection, an HTTP/2 protocol error (GOAWAY, 1.21) | sent once more; then retry |
"""

from __future__ import annotations

import asyncio
import ssl
import string
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpcore
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flashwire.workers.push.base import Alert, Outcome, Platform, Target, retry_after_seconds

PAYLOAD_MAX_BYTES = 4_096
"""Apple: a regular remote notification's payload is at most 4 KB (VoIP: 5 KB)."""
COLLAPSE_ID_MAX_BYTES = 64
"""Apple: `apns-collapse-id` is at most 64 bytes."""
TOKEN_REFRESH_S = 30 * 60
"""Age at which the provider token is signed anew: Apple accepts one renewal every 20 to 60
minutes (aioapns renews every 30 minutes too)."""
PROVIDER_TOKEN_REASONS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})
"""403 reasons after which a freshly signed token may succeed."""

_HEX_DIGITS = frozenset(string.hexdigits)


class ProviderToken:
    """The ES256 provider token of one sender, signed on first use and every `refresh_s` seconds.

    `key_pem` is the contents of the .p8 key file Apple hands out (a PKCS#8 PEM EC P-256 private
    key), not its path (PITFALLS 1.13); a key of another kind raises ValueError at once.
    `clock` gives seconds since the epoch (the `iat` claim); tests pass their own.
    """

    def __init__(
        self,
        *,
        key_pem: str,
        key_id: str,
        team_id: str,
        refresh_s: float = TOKEN_REFRESH_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"an APNs key is an EC P-256 private key, got {type(key).__name__}")
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._refresh_s = refresh_s
        self._clock = clock
        self._token = ""
        self._issued_at_s = 0.0

    def current(self) -> str:
        """The token to send now: the cached one unless it is `refresh_s` old (or renewed)."""
        now_s = self._clock()
        if not self._token or now_s - self._issued_at_s >= self._refresh_s:
            self._token = jwt.encode(
                {"iss": self._team_id, "iat": int(now_s)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id, "typ": None},
            )
            self._issued_at_s = now_s
        return self._token

    def renew(self, stale: str) -> None:
        """Sign anew on next use, if `stale` (the token APNs refused) is still the current one:
        a hundred sends refused at once renew it once, not a hundred times (PITFALLS 1.12)."""
        if stale == self._token:
            self._token = ""


class ApnsSender:
    """Sends alerts to APNs device tokens; one per worker process (base.PushSender).

    :param key_pem: the .p8 key's contents (PEM text).
    :param key_id: the key's 10-character id (the JWT's `kid`).
    :param team_id: the developer team id (the JWT's `iss`).
    :param topic: the app's bundle id (`apns-topic`).
    :param endpoint: the production APNs origin; `sandbox_endpoint` takes targets whose
        `environment` is "development".
    :param timeout_s: the longest one request may take, answer included (PITFALLS 1.14).
    :param ca_file: a PEM file of a further CA to trust (a local test service's); the system's
        roots and certifi's are always trusted (APNs' USERTrust root, PITFALLS 1.20).
    :param max_connections: HTTP/2 connections kept per origin at most; each carries as many
        concurrent streams as APNs allows (SETTINGS_MAX_CONCURRENT_STREAMS).

    Building it does no network I/O (it reads the CA files); the connection opens on the first send.
    """

    platform: Platform = "apns"

    def __init__(
        self,
        *,
        key_pem: str,
        key_id: str,
        team_id: str,
        topic: str,
        endpoint: str = "https://api.push.apple.com",
        sandbox_endpoint: str = "https://api.sandbox.push.apple.com",
        timeout_s: float = 10,
        ca_file: str | None = None,
        max_connections: int = 100,
    ) -> None:
        self.provider_token = ProviderToken(key_pem=key_pem, key_id=key_id, team_id=team_id)
        self._origins = {"production": _origin(endpoint), "development": _origin(sandbox_endpoint)}
        self._static_headers = [
            (b"apns-push-type", b"alert"),
            (b"apns-topic", topic.encode()),
            (b"content-type", b"application/json"),
        ]
        self._timeout_s = timeout_s
        self._timeouts = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout_s)}
        # The system's roots and certifi's both: a stale image with one of them still reaches APNs
        # after a CA change (PITFALLS 1.20).
        tls = ssl.create_default_context()
        tls.load_verify_locations(cafile=certifi.where())
        if ca_file is not None:
            tls.load_verify_locations(cafile=ca_file)
        # httpx's own transport, without httpx's request and response models: 40 % less CPU per
        # send (bench/push_apns.py). HTTP/2 only, as APNs (ALPN h2).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls, http1=False, http2=True, max_connections=max_connections
        )

    async def send(self, target: Target, alert: Alert) -> Outcome:
        """Send `alert` to `target`'s device token; never raises for APNs' or the network's faults."""
        if not target.token or not _HEX_DIGITS.issuperset(target.token):
            return Outcome("failed", detail="BadDeviceToken")
        collapse_id = alert.collapse_id.encode()
        if len(collapse_id) > COLLAPSE_ID_MAX_BYTES:
            return Outcome("failed", detail="BadCollapseId")
        body = orjson.dumps(self._body(alert))
        if len(body) > PAYLOAD_MAX_BYTES:
            return Outcome("failed", detail="PayloadTooLarge")
        scheme, host, port = self._origins[
            "development" if target.environment == "development" else "production"
        ]
        url = httpcore.URL(scheme=scheme, host=host, port=port, target=b"/3/device/" + target.token.encode())
        headers = [
            *self._static_headers,
            (b"apns-priority", b"10" if alert.priority == "high" else b"5"),
            (b"apns-expiration", b"%d" % alert.expires_at_s),
            (b"apns-collapse-id", collapse_id),
        ]
        renewed = reconnected = False
        while True:
            token = self.provider_token.current()
            try:
                async with asyncio.timeout(self._timeout_s):
                    response = await self._pool.request(
                        "POST",
                        url,
                        headers=[*headers, (b"authorization", b"bearer " + token.encode())],
                        content=body,
                        extensions=self._timeouts,
                    )
            except (TimeoutError, httpcore.TimeoutException):
                # The alert may have reached APNs: the fan-out decides whether to send it again.
                return Outcome("retry", detail="timeout")
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                # GOAWAY, a reset stream, a closed socket: httpcore drops that connection from the
                # pool, so the repeat goes out on another one (PITFALLS 1.21). httpcore 1.0.9 also
                # fails, on a GOAWAY, streams APNs had taken and will answer (encode/httpcore PR
                # #1054): their repeat is a duplicate, which the collapse id folds into one alert.
                if not reconnected:
                    reconnected = True
                    continue
                return Outcome("retry", detail=type(exc).__name__)
            if response.status == 200:
                return Outcome("accepted")
            reason, timestamp_ms = _reason(response)
            if response.status == 403 and reason in PROVIDER_TOKEN_REASONS and not renewed:
                renewed = True
                self.provider_token.renew(token)
                continue
            return _outcome(response, reason, timestamp_ms, target)

    async def aclose(self) -> None:
        """Close the connections (idempotent)."""
        await self._pool.aclose()

    @staticmethod
    def _body(alert: Alert) -> dict[str, Any]:
        aps: dict[str, Any] = {
            "alert": {"title": alert.title, "body": alert.text},
            "thread-id": alert.edition,
            # Lets a notification service extension set the text's direction and language.
            "mutable-content": 1,
        }
        if alert.priority == "high":
            aps["sound"] = "default"
        return {"aps": aps, "flashwire": alert.payload()}


def _origin(endpoint: str) -> tuple[bytes, bytes, int | None]:
    """Scheme, host and port of an https origin ("https://api.push.apple.com[:443]")."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"an APNs endpoint is an https origin, got {endpoint!r}")
    return b"https", parts.hostname.encode("idna"), parts.port


def _reason(response: httpcore.Response) -> tuple[str, int | None]:
    """APNs' error body {"reason": ..., "timestamp": ms (410 only)}; the status if unreadable."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return str(response.status), None
    if not isinstance(data, dict):
        return str(response.status), None
    reason = data.get("reason")
    timestamp = data.get("timestamp")
    return (
        reason if isinstance(reason, str) and reason else str(response.status),
        timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else None,
    )


def _outcome(response: httpcore.Response, reason: str, timestamp_ms: int | None, target: Target) -> Outcome:
    status = response.status
    if status == 410:
        # The token was found invalid at `timestamp`; a registration made after that is a new
        # one and stays (PITFALLS 1.16). Without a timestamp APNs' 410 stands as said.
        if timestamp_ms is None or timestamp_ms >= target.registered_at_ms:
            return Outcome("gone", detail=reason)
        return Outcome("failed", detail=reason)
    if status == 429 or status >= 500:
        retry_after = next((v for k, v in response.headers if k.lower() == b"retry-after"), b"")
        retry_after_s = retry_after_seconds(retry_after.decode("latin-1"), time.time())
        return Outcome("retry", retry_after_s=retry_after_s, detail=reason)
    return Outcome("failed", detail=reason)
