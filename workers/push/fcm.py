"""The Firebase Cloud Messaging sender: FCM HTTP v1 `messages:send` with service-account OAuth2.

    POST {endpoint}/v1/projects/{project_id}/messages:send
    Authorization: Bearer <access token, scope https://www.googleapis.com/auth/firebase.messaging>
    {"message": {"token", "notification", "data", "android", "apns", "webpush"}}

Access tokens come from the service account key file through google-auth (RFC 7523 JWT bearer
grant at the key file's `token_uri`; legacy server keys are gone: PITFALLS 1.29). google-auth's
refresh is synchronous, so it runs in a thread, once for all concurrent sends (an asyncio lock),
and before the token expires (google-auth counts a token expired 3 min 45 s early). A 401 refreshes
the token once, shared by every send that saw the same stale token, and retries the send once.

The message (`fcm_message`) sets every platform block, since v1 has no single collapse key
(PITFALLS 1.22) and fills APNs defaults we do not want (1.23): android.collapse_key and
notification tag = the line id, apns-collapse-id = the line id, webpush Topic = alert.topic; a
visible `notification` (1.24: data-only messages do not wake a killed iOS app, and Android
deprioritises high-priority messages that show nothing).

`data` is `Alert.payload()` with every value a string, as FCM requires (a data value of another
type is 400 INVALID_ARGUMENT): strings as they are, numbers, booleans, lists and maps as their
compact JSON text ("version": "3"), and None left out (an app reads a missing key as null; "url"
is absent when the line has no link).

Answers (FCM v1 ErrorCode reference) → Outcome: 2xx accepted; UNREGISTERED (404) and
SENDER_ID_MISMATCH (403) gone; 429 QUOTA_EXCEEDED, 500 INTERNAL, 502/503 UNAVAILABLE, 504 retry
with Retry-After (1.26; a 503 may have been delivered anyway, 1.28: the collapse key makes a
repeat replace the first); INVALID_ARGUMENT (400) failed, never gone (1.25: also the answer for a
too-large payload or a bad TTL, our faults, not the token's); any other 4xx failed. A timeout, a
failed or dropped connection is retry (an HTTP/2 GOAWAY fails the streams the server did not
take; the fan-out sends them again; httpx cannot tell them from streams answered on a dropped
connection, whose resend would duplicate: 1.28). `detail` is FCM's errorCode, else its status,
else the HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport
import httpx
import orjson
from google.oauth2 import service_account

from flashwire.workers.push.base import Alert, Outcome, OutcomeStatus, Platform, Target, retry_after_seconds

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# FCM's largest time to live: 28 days (AndroidConfig.ttl).
TTL_MAX_S = 2_419_200
ANDROID_CHANNEL_ID = "breaking"
GONE_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# After a refused or failed token refresh, sends answer that outcome for this long instead of
# each asking the token endpoint again (a fan-out would otherwise queue 100,000 refreshes).
AUTH_FAILURE_HOLD_S = 5.0


def data_strings(payload: Mapping[str, Any]) -> dict[str, str]:
    """FCM `data`: strings kept, None left out, anything else as its compact JSON text."""
    return {
        key: value if isinstance(value, str) else orjson.dumps(value).decode()
        for key, value in payload.items()
        if value is not None
    }


def fcm_message(token: str, alert: Alert, now_s: float) -> dict[str, Any]:
    """The v1 `message` for one registration token (PITFALLS 1.22-1.24 in the module docstring)."""
    ttl_s = min(alert.ttl_s(now_s), TTL_MAX_S)
    high = alert.priority == "high"
    return {
        "token": token,
        "notification": {"title": alert.title, "body": alert.text},
        "data": data_strings(alert.payload()),
        "android": {
            "collapse_key": alert.collapse_id,
            "priority": "HIGH" if high else "NORMAL",
            "ttl": f"{ttl_s}s",
            "notification": {"tag": alert.collapse_id, "channel_id": ANDROID_CHANNEL_ID},
        },
        "apns": {
            "headers": {
                "apns-priority": "10" if high else "5",
                "apns-push-type": "alert",
                "apns-expiration": str(int(now_s) + ttl_s),
                "apns-collapse-id": alert.collapse_id,
            }
        },
        "webpush": {"headers": {"TTL": str(ttl_s), "Urgency": alert.priority, "Topic": alert.topic}},
    }


def error_code(body: bytes) -> str:
    """The FcmError errorCode of a v1 error body, else its google.rpc status, else ""."""
    try:
        error = orjson.loads(body)["error"]
        for detail in error.get("details") or ():
            if detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
                return str(detail["errorCode"])
        return str(error.get("status") or "")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return ""


def _names_the_token(body: bytes) -> bool:
    """A 400 INVALID_ARGUMENT whose message says the registration token is not valid: the target
    is gone (../shared/PITFALLS.md 1.25: only then; a 400 about the message is our own fault)."""
    try:
        message = str(json.loads(body).get("error", {}).get("message", ""))
    except (ValueError, AttributeError):
        return False
    return "registration token" in message.lower() and "not a valid" in message.lower()


def outcome_for(status: int, body: bytes, retry_after: str | None, now_s: float) -> Outcome:
    """The Outcome of one messages:send answer (mapping in the module docstring)."""
    if 200 <= status < 300:
        return Outcome("accepted")
    code = error_code(body)
    detail = code or str(status)
    if code in GONE_CODES or (status == 400 and _names_the_token(body)):
        return Outcome("gone", detail=detail)
    if status in RETRY_STATUSES:
        return Outcome("retry", retry_after_seconds(retry_after, now_s), detail)
    return Outcome("failed", detail=detail)


class _AuthResponse(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _AuthRequest(google.auth.transport.Request):
    """google-auth's synchronous transport over one httpx.Client (the token endpoint's TLS trust
    is the sender's: `ca_file`); network faults become google.auth TransportError."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _AuthResponse:
        try:
            response = self._client.request(
                method, url, content=body, headers=headers, timeout=timeout or self._client.timeout
            )
        except httpx.HTTPError as exc:
            message = f"{type(exc).__name__}: {exc}"
            raise google.auth.exceptions.TransportError(message) from exc  # type: ignore[no-untyped-call]
        return _AuthResponse(response)


class _AuthFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class FcmSender:
    """FCM HTTP v1 sender, one per worker process (implements base.PushSender).

    :param credentials_file: the service account key file (JSON, as the Firebase console gives
        it); its `project_id` names the project and its `token_uri` the OAuth2 token endpoint.
    :param endpoint: the FCM API origin.
    :param timeout_s: the bound on connecting, each read and write, and waiting for a pooled
        connection, per request (messages:send and the token endpoint).
    :param ca_file: PEM CA certificates to trust instead of the system's (local services in tests).
    :param max_connections: the connection pool's bound (HTTP/1.1: concurrent sends; HTTP/2
        multiplexes up to the server's stream limit on one connection).
    :param http2: HTTP/2 (the default, chosen by measurement: bench/push_fcm.py) or HTTP/1.1.

    Reads the key file at construction (raises ValueError or OSError if it is unreadable) and
    does no network I/O until the first send.
    """

    platform: Platform = "fcm"

    def __init__(
        self,
        *,
        credentials_file: str,
        endpoint: str = "https://fcm.googleapis.com",
        timeout_s: float = 10,
        ca_file: str | None = None,
        max_connections: int = 100,
        http2: bool = True,
    ) -> None:
        self._credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            credentials_file, scopes=[SCOPE]
        )
        project_id = self._credentials.project_id
        if not project_id:
            raise ValueError(f"{credentials_file} names no project_id")
        self.url = f"{endpoint.rstrip('/')}/v1/projects/{project_id}/messages:send"
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        timeout = httpx.Timeout(timeout_s)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(http2=http2, verify=verify, timeout=timeout, limits=limits)
        self._auth_client = httpx.Client(verify=verify, timeout=timeout)
        self._auth_request = _AuthRequest(self._auth_client)
        self._refresh_lock = asyncio.Lock()
        self._auth_failure: Outcome | None = None
        self._auth_failure_until = 0.0

    async def send(self, target: Target, alert: Alert) -> Outcome:
        """Send `alert` to the registration token `target.token`; never raises for network faults."""
        now_s = time.time()
        body = orjson.dumps({"message": fcm_message(target.token, alert, now_s)})
        try:
            token = await self._access_token(stale=None)
            response = await self._post(body, token)
            if response.status_code == 401:
                response = await self._post(body, await self._access_token(stale=token))
        except _AuthFailed as failure:
            return failure.outcome
        except httpx.TimeoutException:
            return Outcome("retry", detail="timeout")
        except httpx.HTTPError as exc:
            return Outcome("retry", detail=type(exc).__name__)
        return outcome_for(response.status_code, response.content, response.headers.get("retry-after"), now_s)

    async def _post(self, body: bytes, token: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        return await self._client.post(self.url, content=body, headers=headers)

    async def _access_token(self, stale: str | None) -> str:
        """A valid access token; refreshed (in a thread, by one caller at a time) when the cached
        one is about to expire or is `stale` (the one a 401 refused)."""
        credentials = self._credentials
        if credentials.valid and credentials.token != stale:
            return str(credentials.token)
        async with self._refresh_lock:
            # Another send may have refreshed while this one waited for the lock.
            if credentials.valid and credentials.token != stale:
                return str(credentials.token)
            if self._auth_failure is not None and time.monotonic() < self._auth_failure_until:
                raise _AuthFailed(self._auth_failure)
            try:
                await asyncio.to_thread(credentials.refresh, self._auth_request)
            except google.auth.exceptions.GoogleAuthError as exc:
                # A network fault or a retryable answer is worth a retry; a refused grant (a
                # revoked key, a wrong token_uri) is a configuration fault no retry will mend.
                network = isinstance(exc, google.auth.exceptions.TransportError)
                status: OutcomeStatus = "retry" if network or exc.retryable else "failed"
                self._auth_failure = Outcome(status, detail=f"auth: {type(exc).__name__}")
                self._auth_failure_until = time.monotonic() + AUTH_FAILURE_HOLD_S
                raise _AuthFailed(self._auth_failure) from exc
            self._auth_failure = None
            return str(credentials.token)

    async def aclose(self) -> None:
        """Close both connection pools (idempotent)."""
        await self._client.aclose()
        self._auth_client.close()
