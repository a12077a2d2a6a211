"""FcmSender against the local FCM HTTP v1 service and OAuth2 token endpoint (tests.push_services.fcm).

The service runs in its own process (HTTPS, HTTP/2 by ALPN) and checks what FCM checks: the
bearer token it issued for a JWT assertion signed with the service account's key, the project,
the message's shape. The first tests are pure: the message and the outcome mapping.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flashwire.dev.ports import free_port
from flashwire.workers.push.base import Alert, Outcome, Target
from flashwire.workers.push.fcm import FcmSender, data_strings, fcm_message, outcome_for
from tests.push_services import PushService

LINE_ID = "en-0123456789abcdef"


def make_alert(
    kind: str = "line",
    urgency: str = "flash",
    line_id: str = LINE_ID,
    text: str = "Quake hits",
    ttl_s: int = 3600,
) -> Alert:
    return Alert(
        kind=kind,  # type: ignore[arg-type]
        line_id=line_id,
        version=2 if kind == "correction" else 1,
        edition="en",
        language="en",
        direction="ltr",
        title={"line": "Breaking", "correction": "Correction"}.get(kind, "Withdrawn"),
        text=text,
        url=None if kind == "withdrawal" else "https://news.example/q",
        cursor="1796680000000-0",
        urgency=urgency,
        expires_at_s=int(time.time()) + ttl_s,
    )


def target(token: str) -> Target:
    return Target(id=token[:8], platform="fcm", token=token)


# --- pure: the message and the outcome mapping -----------------------------------------------


def test_data_values_are_strings_with_none_left_out() -> None:
    """FCM data values must be strings: numbers and maps as JSON text, None omitted."""
    assert data_strings({"a": "x", "n": 3, "b": True, "m": {"k": [1]}, "none": None}) == {
        "a": "x",
        "n": "3",
        "b": "true",
        "m": '{"k":[1]}',
    }
    payload = data_strings(make_alert(kind="withdrawal").payload())
    assert "url" not in payload and payload["version"] == "1"


def test_priority_and_ttl_per_platform() -> None:
    """A flash line is HIGH / apns-priority 10 / Urgency high; a correction is normal everywhere;
    the TTL never exceeds FCM's 28 days."""
    now = time.time()
    flash = fcm_message("t", make_alert(), now)
    assert flash["android"]["priority"] == "HIGH"
    assert flash["apns"]["headers"]["apns-priority"] == "10"
    assert flash["webpush"]["headers"]["Urgency"] == "high"
    correction = fcm_message("t", make_alert(kind="correction"), now)
    assert correction["android"]["priority"] == "NORMAL"
    assert correction["apns"]["headers"]["apns-priority"] == "5"
    assert correction["webpush"]["headers"]["Urgency"] == "normal"
    month = fcm_message("t", make_alert(ttl_s=40 * 86_400), now)
    assert month["android"]["ttl"] == "2419200s" and month["webpush"]["headers"]["TTL"] == "2419200"


def _error(status: int, rpc: str, code: str | None, message: str = "m") -> bytes:
    details = (
        [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}] if code else []
    )
    body = {"error": {"code": status, "status": rpc, "message": message, "details": details}}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [
        (200, b'{"name": "projects/p/messages/1"}', None, Outcome("accepted")),
        (404, _error(404, "NOT_FOUND", "UNREGISTERED"), None, Outcome("gone", detail="UNREGISTERED")),
        (
            403,
            _error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
            None,
            Outcome("gone", detail="SENDER_ID_MISMATCH"),
        ),
        (403, _error(403, "PERMISSION_DENIED", None), None, Outcome("failed", detail="PERMISSION_DENIED")),
        (
            400,
            _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
            None,
            Outcome("failed", detail="INVALID_ARGUMENT"),
        ),
        # The one 400 that is about the target, as FCM words it: the token is gone (PITFALLS 1.25).
        (
            400,
            _error(
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            ),
            None,
            Outcome("gone", detail="INVALID_ARGUMENT"),
        ),
        (
            429,
            _error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
            "30",
            Outcome("retry", 30.0, "QUOTA_EXCEEDED"),
        ),
        (503, _error(503, "UNAVAILABLE", "UNAVAILABLE"), None, Outcome("retry", None, "UNAVAILABLE")),
        (502, b"<html>bad gateway</html>", None, Outcome("retry", None, "502")),
    ],
)
def test_outcome_mapping(status: int, body: bytes, retry_after: str | None, expected: Outcome) -> None:
    """Only UNREGISTERED and SENDER_ID_MISMATCH are gone; a 400 is failed (PITFALLS 1.25)."""
    assert outcome_for(status, body, retry_after, time.time()) == expected


# --- against the local service ------------------------------------------------------------------


def start(state_dir: Path, *args: str) -> PushService:
    return PushService("fcm", state_dir, *args).start()


@pytest.fixture(scope="module")
def fcm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushService]:
    service = start(tmp_path_factory.mktemp("fcm"))
    yield service
    service.stop()


def new_sender(service: PushService, **kwargs: Any) -> FcmSender:
    return FcmSender(
        credentials_file=str(service.state_dir / "service-account.json"),
        endpoint=f"https://127.0.0.1:{service.port}",
        ca_file=str(service.state_dir / "ca.pem"),
        **kwargs,
    )


@pytest.fixture
async def sender(fcm: PushService) -> AsyncIterator[FcmSender]:
    sender = new_sender(fcm)
    yield sender
    await sender.aclose()


def tokens(service: PushService, count: int) -> list[str]:
    return [t["token"] for t in service.targets(count)]


def received_by(service: PushService, token: str) -> list[dict[str, Any]]:
    return [m for m in service.received() if m["token"] == token]


def tokens_issued(service: PushService) -> int:
    return int(service.control("GET", "stats")["tokens_issued"])


async def test_what_the_device_receives(fcm: PushService, sender: FcmSender) -> None:
    """Payload as the app reads it, visible notification, collapse key, TTL and priority on all
    three platform blocks (PITFALLS 1.22-1.24)."""
    [token] = tokens(fcm, 1)
    alert = make_alert()
    before = time.time()
    assert await sender.send(target(token), alert) == Outcome("accepted")
    [got] = received_by(fcm, token)
    assert got["payload"] == {
        "type": "flashwire.alert",
        "kind": "line",
        "id": LINE_ID,
        "version": "1",
        "edition": "en",
        "lang": "en",
        "dir": "ltr",
        "title": "Breaking",
        "text": "Quake hits",
        "url": "https://news.example/q",
        "cursor": "1796680000000-0",
        "urgency": "flash",
    }
    assert got["collapse"] == LINE_ID
    message = got["message"]
    assert message["notification"] == {"title": "Breaking", "body": "Quake hits"}
    assert message["android"]["notification"] == {"tag": LINE_ID, "channel_id": "breaking"}
    assert message["android"]["priority"] == "HIGH"
    ttl_s = int(message["android"]["ttl"].removesuffix("s"))
    assert 3590 <= ttl_s <= 3600
    apns = message["apns"]["headers"]
    assert apns["apns-priority"] == "10" and apns["apns-push-type"] == "alert"
    assert apns["apns-collapse-id"] == LINE_ID
    assert abs(int(apns["apns-expiration"]) - alert.expires_at_s) <= 2
    assert abs(int(apns["apns-expiration"]) - (before + ttl_s)) <= 2
    assert message["webpush"]["headers"] == {"TTL": str(ttl_s), "Urgency": "high", "Topic": alert.topic}
    assert got["headers"]["content-type"] == "application/json"


async def test_a_correction_collapses_onto_its_line(fcm: PushService, sender: FcmSender) -> None:
    """The correction of a line carries the line's collapse key, tag and apns-collapse-id, at
    normal priority."""
    [token] = tokens(fcm, 1)
    assert await sender.send(target(token), make_alert()) == Outcome("accepted")
    assert await sender.send(target(token), make_alert(kind="correction")) == Outcome("accepted")
    first, second = received_by(fcm, token)
    assert first["collapse"] == second["collapse"] == LINE_ID
    assert second["payload"]["kind"] == "correction" and second["payload"]["version"] == "2"
    assert second["message"]["android"]["notification"]["tag"] == LINE_ID
    assert second["message"]["apns"]["headers"]["apns-collapse-id"] == LINE_ID
    assert second["message"]["android"]["priority"] == "NORMAL"
    assert second["message"]["apns"]["headers"]["apns-priority"] == "5"


async def test_gone_targets(fcm: PushService, sender: FcmSender) -> None:
    """UNREGISTERED (404) and SENDER_ID_MISMATCH (403) are gone; nothing is received."""
    unregistered, mismatched = tokens(fcm, 2)
    fcm.faults("gone", [unregistered])
    fcm.faults("mismatch", [mismatched])
    assert await sender.send(target(unregistered), make_alert()) == Outcome("gone", detail="UNREGISTERED")
    assert await sender.send(target(mismatched), make_alert()) == Outcome("gone", detail="SENDER_ID_MISMATCH")
    assert received_by(fcm, unregistered) == received_by(fcm, mismatched) == []


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("throttle", Outcome("retry", 7.0, "QUOTA_EXCEEDED")),
        ("unavailable", Outcome("retry", 7.0, "UNAVAILABLE")),
        ("error", Outcome("retry", None, "INTERNAL")),
    ],
)
async def test_retry_then_accepted(fcm: PushService, sender: FcmSender, mode: str, expected: Outcome) -> None:
    """429 and 503 are retry after their Retry-After, 500 retry; the next send is accepted."""
    [token] = tokens(fcm, 1)
    fcm.faults(mode, [token], retry_after_s=7)
    assert await sender.send(target(token), make_alert()) == expected
    assert await sender.send(target(token), make_alert()) == Outcome("accepted")
    assert len(received_by(fcm, token)) == 1


async def test_invalid_argument_fails_and_keeps_the_target(fcm: PushService, sender: FcmSender) -> None:
    """A payload over 4,096 bytes is 400 INVALID_ARGUMENT: failed, never gone (PITFALLS 1.25)."""
    [token] = tokens(fcm, 1)
    assert await sender.send(target(token), make_alert(text="x" * 5_000)) == Outcome(
        "failed", detail="INVALID_ARGUMENT"
    )
    [rejected] = [r for r in fcm.rejected() if r["token"] == token]
    assert rejected["status"] == 400 and rejected["reason"] == "INVALID_ARGUMENT"
    assert await sender.send(target(token), make_alert()) == Outcome("accepted")


async def test_a_hanging_service_is_a_timeout_to_retry(fcm: PushService) -> None:
    """A send the service never answers ends at the sender's timeout as retry."""
    [token] = tokens(fcm, 1)
    sender = new_sender(fcm, timeout_s=2)
    try:
        assert await sender.send(target(token), make_alert()) == Outcome("accepted")
        fcm.faults("hang", [token])
        started = time.monotonic()
        assert await sender.send(target(token), make_alert()) == Outcome("retry", detail="timeout")
        assert time.monotonic() - started < 10
    finally:
        await sender.aclose()


async def test_an_unreachable_service_is_a_retry(fcm: PushService) -> None:
    """No FCM listening (the token endpoint answers): retry, the connection error named."""
    sender = FcmSender(
        credentials_file=str(fcm.state_dir / "service-account.json"),
        endpoint=f"https://127.0.0.1:{free_port()}",
        ca_file=str(fcm.state_dir / "ca.pem"),
    )
    try:
        assert await sender.send(target("any:APA91b"), make_alert()) == Outcome(
            "retry", detail="ConnectError"
        )
    finally:
        await sender.aclose()


async def test_a_refused_token_is_refreshed_once(fcm: PushService, sender: FcmSender) -> None:
    """After the service forgets its access tokens, 50 concurrent sends each get a 401, share
    one refresh, and are sent again: all accepted, each received once."""
    targets = tokens(fcm, 50)
    assert await sender.send(target(targets[0]), make_alert()) == Outcome("accepted")
    issued = tokens_issued(fcm)
    fcm.control("POST", "revoke")
    outcomes = await asyncio.gather(*(sender.send(target(t), make_alert()) for t in targets))
    assert outcomes == [Outcome("accepted")] * 50
    assert tokens_issued(fcm) == issued + 1
    assert Counter(m["token"] for m in fcm.received() if m["token"] in set(targets)) == Counter(
        {t: 2 if t == targets[0] else 1 for t in targets}
    )


async def test_refused_credentials_fail_without_a_request_each(fcm: PushService, tmp_path: Path) -> None:
    """A key the token endpoint does not know (a revoked key) is failed: a configuration fault,
    the target kept."""
    account = json.loads((fcm.state_dir / "service-account.json").read_text())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    (tmp_path / "revoked.json").write_text(json.dumps(account))
    sender = FcmSender(
        credentials_file=str(tmp_path / "revoked.json"),
        endpoint=f"https://127.0.0.1:{fcm.port}",
        ca_file=str(fcm.state_dir / "ca.pem"),
    )
    [token] = tokens(fcm, 1)
    requests = fcm.control("GET", "stats")["token_requests"]
    try:
        for _ in range(2):
            assert await sender.send(target(token), make_alert()) == Outcome(
                "failed", detail="auth: RefreshError"
            )
    finally:
        await sender.aclose()
    assert received_by(fcm, token) == []
    # The second send answered from the held failure, without asking the token endpoint again.
    assert fcm.control("GET", "stats")["token_requests"] == requests + 1


@pytest.mark.slow
async def test_500_concurrent_sends_share_one_token(fcm: PushService) -> None:
    """500 sends through one sender, 100 at a time: all accepted, each received once, and one
    access token serves them all (the refresh is shared, not per send)."""
    sender = new_sender(fcm)
    targets = tokens(fcm, 500)
    issued = tokens_issued(fcm)
    limit = asyncio.Semaphore(100)

    async def send(token: str) -> Outcome:
        async with limit:
            return await sender.send(target(token), make_alert())

    try:
        outcomes = await asyncio.gather(*(send(t) for t in targets))
    finally:
        await sender.aclose()
    assert Counter(outcomes) == Counter({Outcome("accepted"): 500})
    wanted = set(targets)
    assert Counter(m["token"] for m in fcm.received() if m["token"] in wanted) == Counter(wanted)
    assert tokens_issued(fcm) == issued + 1


async def test_the_token_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    """With access tokens of 229 s, google-auth counts one expired 3 min 45 s early: 4 s after it
    was issued the next send refreshes it, while the service would still take it for 225 s."""
    service = start(tmp_path, "--token-lifetime-s", "229")
    sender = new_sender(service)
    try:
        [token] = tokens(service, 1)
        assert await sender.send(target(token), make_alert()) == Outcome("accepted")
        assert tokens_issued(service) == 1
        await asyncio.sleep(4.5)
        assert await sender.send(target(token), make_alert()) == Outcome("accepted")
        assert tokens_issued(service) == 2
        assert service.rejected() == []
    finally:
        await sender.aclose()
        service.stop()


# --- the local service refuses what FCM refuses (so the tests above can fail) -------------------


def assertion(service: PushService, **changes: Any) -> str:
    """A JWT bearer assertion as google-auth makes it, with `changes` to its claims."""
    account = json.loads((service.state_dir / "service-account.json").read_text())
    now = int(time.time())
    claims = {
        "iss": account["client_email"],
        "aud": "https://oauth2.googleapis.com/token",
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "iat": now,
        "exp": now + 3600,
        **changes,
    }
    return jwt.encode(claims, account["private_key"], "RS256", headers={"kid": account["private_key_id"]})


def https(service: PushService) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{service.port}",
        verify=ssl.create_default_context(cafile=str(service.state_dir / "ca.pem")),
    )


def test_the_token_endpoint_checks_the_assertion(fcm: PushService) -> None:
    """RFC 7523: signature, audience, issuer, scope and a lifetime of at most one hour."""
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    with https(fcm) as client:
        good = client.post("/token", data={"grant_type": grant, "assertion": assertion(fcm)})
        assert good.status_code == 200 and good.json()["token_type"] == "Bearer"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"aud": "https://elsewhere.example/token"}, "invalid_grant"),
            ({"iss": "someone@else.iam.gserviceaccount.com"}, "invalid_grant"),
            ({"exp": int(time.time()) + 7200}, "invalid_grant"),
            ({"exp": int(time.time()) - 10}, "invalid_grant"),
            ({"scope": "https://www.googleapis.com/auth/cloud-platform"}, "invalid_scope"),
        ]
        for changes, error in cases:
            answer = client.post("/token", data={"grant_type": grant, "assertion": assertion(fcm, **changes)})
            assert (answer.status_code, answer.json()["error"]) == (400, error), changes


def test_messages_send_refuses_what_fcm_refuses(fcm: PushService) -> None:
    """Non-string data, a bad TTL, a missing collapse key, another project, no token: refused."""
    [token] = tokens(fcm, 1)
    with https(fcm) as client:
        grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion(fcm)}
        access = client.post("/token", data=grant).json()["access_token"]
        auth = {"authorization": f"Bearer {access}"}
        message = fcm_message(token, make_alert(), time.time())
        url = "/v1/projects/flashwire-test/messages:send"
        assert client.post(url, json={"message": message}, headers=auth).status_code == 200
        for broken in [
            {**message, "data": {**message["data"], "version": 1}},
            {**message, "android": {**message["android"], "ttl": "3600"}},
            {**message, "android": {**message["android"], "ttl": "2419201s"}},
            {**message, "android": {k: v for k, v in message["android"].items() if k != "collapse_key"}},
            {**message, "data": {**message["data"], "google.x": "1"}},
        ]:
            answer = client.post(url, json={"message": broken}, headers=auth)
            assert answer.status_code == 400, broken
            assert answer.json()["error"]["details"][0]["errorCode"] == "INVALID_ARGUMENT"
        other = client.post("/v1/projects/other/messages:send", json={"message": message}, headers=auth)
        assert other.status_code == 403
        assert client.post(url, json={"message": message}).status_code == 401
