"""WebPushSender against the local RFC 8030 push service (tests/push_services/webpush.py) in its
own process: what arrives (decrypted), the headers, VAPID, each fault's Outcome, and 2,000 sends
at once. The service's own checks are tested too, with requests the sender would never make.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02
from pywebpush import WebPusher

from flashwire.core.vapid import load_vapid_key, subject_warning, validate_subject
from flashwire.dev.ports import free_port
from flashwire.workers.push.base import Alert, Outcome, Target
from flashwire.workers.push.vapid import VapidSigner, origin_of
from flashwire.workers.push.webpush import (
    WebPushSender,
    generate_vapid_key_pem,
    push_headers,
    vapid_public_key,
)
from tests.push_services import PushService

SUBJECT = "mailto:desk@flashwire.news"
PEM = generate_vapid_key_pem()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_alert(kind: str = "line", version: int = 1, urgency: str = "flash", **changes: Any) -> Alert:
    alert = Alert(
        kind=kind,  # type: ignore[arg-type]
        line_id="en-00000000000000a1",
        version=version,
        edition="en",
        language="en",
        direction="ltr",
        title="Breaking",
        text="Parliament votes to dissolve itself",
        url="https://news.example.org/live/1",
        cursor="1733600000000-0",
        urgency=urgency,
        expires_at_s=int(time.time()) + 3600,
    )
    return dataclasses.replace(alert, **changes)


def _outcome(status: str, detail: str, retry_after_s: float | None = None) -> Outcome:
    return Outcome(status, retry_after_s=retry_after_s, detail=detail)  # type: ignore[arg-type]


def as_target(subscription: dict[str, Any]) -> Target:
    return Target(
        id=subscription["endpoint"].rsplit("/", 1)[-1],
        platform="webpush",
        token=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushService]:
    push_service = PushService("webpush", tmp_path_factory.mktemp("webpush")).start()
    yield push_service
    push_service.stop()


@pytest.fixture
async def sender() -> AsyncIterator[WebPushSender]:
    web_push = WebPushSender(vapid_private_key_pem=PEM, subject=SUBJECT, timeout_s=5)
    yield web_push
    await web_push.aclose()


def targets(service: PushService, count: int, **body: Any) -> list[Target]:
    return [as_target(s) for s in service.control("POST", "targets", {"count": count, **body})["targets"]]


def received_by(service: PushService, target: Target) -> list[dict[str, Any]]:
    return [m for m in service.received() if m["token"] == target.token]


def rejected_of(service: PushService, target: Target) -> list[dict[str, Any]]:
    return [m for m in service.rejected() if m["token"] == target.token]


# --- what arrives ---------------------------------------------------------------------------


async def test_flash_line_arrives_decrypted_with_ttl_urgency_topic(
    service: PushService, sender: WebPushSender
) -> None:
    """A flash line: 201, the app's payload decrypted exactly, TTL from the alert, Urgency high, Topic."""
    [target] = targets(service, 1)
    alert = make_alert()
    outcome = await sender.send(target, alert)
    assert (outcome.status, outcome.detail) == ("accepted", "201")
    [message] = received_by(service, target)
    assert message["payload"] == alert.payload()
    assert message["collapse"] == alert.topic
    headers = message["headers"]
    assert headers["Urgency"] == "high" and headers["Topic"] == alert.topic
    assert 3590 <= int(headers["TTL"]) <= 3600


async def test_correction_has_the_same_topic_normal_urgency_and_replaces(
    service: PushService, sender: WebPushSender
) -> None:
    """A correction of the line carries the line's Topic and Urgency normal; the inbox shows it alone."""
    [target] = targets(service, 1)
    line = make_alert()
    correction = make_alert(kind="correction", version=2, title="Correction", text="Parliament votes")
    other = make_alert(line_id="en-00000000000000b2", urgency="routine")
    for alert in (line, other, correction):
        assert (await sender.send(target, alert)).status == "accepted"
    messages = received_by(service, target)
    assert [m["collapse"] for m in messages] == [line.topic, other.topic, line.topic]
    assert [m["headers"]["Urgency"] for m in messages] == ["high", "normal", "normal"]
    shown = service.control("GET", "inbox")["inbox"][target.token]
    assert [m["payload"] for m in shown] == [other.payload(), correction.payload()]


async def test_ttl_is_never_zero(service: PushService, sender: WebPushSender) -> None:
    """An alert at its deadline still goes with TTL 1, never pywebpush's default 0 (PITFALLS 1.1)."""
    [target] = targets(service, 1)
    await sender.send(target, make_alert(expires_at_s=int(time.time()) - 5))
    [message] = received_by(service, target)
    assert message["headers"]["TTL"] == "1"


# --- VAPID ---------------------------------------------------------------------------------


async def test_vapid_token_claims_and_one_signature_per_origin(
    service: PushService, sender: WebPushSender
) -> None:
    """sub is the subject, aud the service's origin, exp ≤ 24 h ahead, signed by the key browsers know;
    and 20 sends to one service sign once (PITFALLS 1.3, 1.4)."""
    subscriptions = targets(service, 20)
    for target in subscriptions:
        assert (await sender.send(target, make_alert())).status == "accepted"
    assert sender.signer.signatures == 1
    origin = f"http://127.0.0.1:{service.port}"
    header = sender.signer.authorization(origin, time.time())
    params = dict(part.strip().split("=", 1) for part in header.removeprefix("vapid ").split(","))
    assert params["k"] == vapid_public_key(PEM)
    point = _unb64url(params["k"])
    assert len(point) == 65 and point[0] == 4
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    claims = jwt.decode(params["t"], key=public_key, algorithms=["ES256"], audience=origin)
    assert claims["sub"] == SUBJECT
    assert 0 < claims["exp"] - time.time() <= 24 * 3600


def test_vapid_claims_are_fresh_per_origin_and_renewed_before_expiry() -> None:
    """Each origin gets its own aud; a token with less than an hour left is replaced."""
    signer = VapidSigner(private_key_pem=PEM, subject=SUBJECT)
    now = time.time()
    audiences = []
    for origin in ("https://fcm.googleapis.com", "https://web.push.apple.com", "https://fcm.googleapis.com"):
        token = signer.authorization(origin, now).split("t=", 1)[1].split(",", 1)[0]
        audiences.append(jwt.decode(token, options={"verify_signature": False})["aud"])
    assert audiences == [
        "https://fcm.googleapis.com",
        "https://web.push.apple.com",
        "https://fcm.googleapis.com",
    ]
    assert signer.signatures == 2
    first = signer.authorization("https://fcm.googleapis.com", now)
    assert signer.authorization("https://fcm.googleapis.com", now + 10 * 3600) == first
    renewed = signer.authorization("https://fcm.googleapis.com", now + 11.5 * 3600)
    assert renewed != first and signer.signatures == 3


@pytest.mark.parametrize(
    "subject",
    ["mailto:not-an-address", "http://flashwire.news/contact", "https:///contact", "desk@flashwire.news"],
)
def test_subjects_that_are_not_mailto_or_https_are_refused_at_construction(subject: str) -> None:
    """RFC 8292 §2.1: the subject is a mailto: or https: URI."""
    with pytest.raises(ValueError):
        WebPushSender(vapid_private_key_pem=PEM, subject=subject)


@pytest.mark.parametrize(
    "subject",
    ["mailto:x@localhost", "mailto:ops@news.invalid", "mailto:ops@example.com", "https://127.0.0.1/contact"],
)
def test_placeholder_subjects_are_warned_about(subject: str) -> None:
    """Apple answers 403 BadJwtToken to placeholder subjects (PITFALLS 1.4); Chrome's and Firefox's
    services do not check, and `flashwire dev` runs with one: a warning at start, not a refusal."""
    assert "403 BadJwtToken" in (subject_warning(subject) or "")
    WebPushSender(vapid_private_key_pem=PEM, subject=subject)


def test_real_subjects_are_accepted() -> None:
    assert validate_subject("mailto:push-ops@flashwire.news") == "mailto:push-ops@flashwire.news"
    assert validate_subject("https://flashwire.news/contact") == "https://flashwire.news/contact"
    assert subject_warning("mailto:push-ops@flashwire.news") is None


def test_vapid_public_key_is_the_uncompressed_point() -> None:
    """applicationServerKey: base64url of the 65-byte uncompressed P-256 point of the key."""
    point = load_vapid_key(PEM).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert _unb64url(vapid_public_key(PEM)) == point and len(point) == 65


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        ("https://web.push.apple.com:443/QGuQ", "https://web.push.apple.com"),
        (
            "https://updates.push.services.mozilla.com:8443/wpush/v2/x",
            "https://updates.push.services.mozilla.com:8443",
        ),
        ("http://[::1]:8080/push/x", "http://[::1]:8080"),
    ],
)
def test_aud_is_the_endpoint_origin(endpoint: str, origin: str) -> None:
    """RFC 8292 §2: aud is the origin of the push resource, default port left out."""
    assert origin_of(endpoint) == origin


def test_wns_endpoints_alone_get_the_windows_headers() -> None:
    """X-WNS-Type only for *.notify.windows.com (PITFALLS 1.11); other services may refuse it."""
    alert = make_alert()
    wns = push_headers("https://wns2-par02p.notify.windows.com/w/?token=abc", alert)
    assert wns["X-WNS-Type"] == "wns/raw" and wns["X-WNS-Cache-Policy"] == "cache"
    for endpoint in ("https://fcm.googleapis.com/fcm/send/abc", "https://notify.windows.com.evil.net/x"):
        assert not any(name.startswith("X-WNS") for name in push_headers(endpoint, alert))
    assert wns["Topic"] == alert.topic and wns["Urgency"] == "high"


# --- faults and their outcomes --------------------------------------------------------------


async def test_gone_is_gone(service: PushService, sender: WebPushSender) -> None:
    """410 from the service, and 404 for a subscription it never had: gone (PITFALLS 1.9)."""
    [target] = targets(service, 1)
    service.faults("gone", [target.token])
    assert await sender.send(target, make_alert()) == _outcome("gone", "410")
    unknown = dataclasses.replace(target, token=target.token.rsplit("/", 1)[0] + "/unknown")
    assert await sender.send(unknown, make_alert()) == _outcome("gone", "404")
    assert received_by(service, target) == []


async def test_throttle_is_retry_after_then_accepted(service: PushService, sender: WebPushSender) -> None:
    """429 with Retry-After: retry with retry_after_s from the header; the next send is accepted."""
    [target] = targets(service, 1)
    service.faults("throttle", [target.token], retry_after_s=7)
    assert await sender.send(target, make_alert()) == _outcome("retry", "429", 7.0)
    assert (await sender.send(target, make_alert())).status == "accepted"
    assert len(received_by(service, target)) == 1


async def test_server_error_is_retry(service: PushService, sender: WebPushSender) -> None:
    [target] = targets(service, 1)
    service.faults("error", [target.token])
    assert await sender.send(target, make_alert()) == _outcome("retry", "500")
    assert (await sender.send(target, make_alert())).status == "accepted"


async def test_hung_service_is_a_timeout_retry(service: PushService) -> None:
    """A service that never answers: retry after the sender's timeout, not a stalled worker (PITFALLS 1.2)."""
    [target] = targets(service, 1)
    service.control("POST", "faults", {"mode": "hang", "tokens": [target.token], "hang_s": 30})
    quick = WebPushSender(vapid_private_key_pem=PEM, subject=SUBJECT, timeout_s=0.5)
    try:
        started = time.monotonic()
        assert await quick.send(target, make_alert()) == _outcome("retry", "timeout")
        assert time.monotonic() - started < 3
    finally:
        await quick.aclose()


async def test_waiting_for_a_connection_does_not_count_against_the_timeout(service: PushService) -> None:
    """With one connection, a send queued behind two slow answers (1.2 s each, inside the 2 s timeout)
    still gets its own 2 s: it is accepted, not timed out after waiting 2.4 s for the connection."""
    slow_a, slow_b, quick = targets(service, 3)
    for slow in (slow_a, slow_b):
        service.control("POST", "faults", {"mode": "hang", "tokens": [slow.token], "hang_s": 1.2})
    one_at_a_time = WebPushSender(vapid_private_key_pem=PEM, subject=SUBJECT, timeout_s=2, max_connections=1)
    try:
        sends = (one_at_a_time.send(t, make_alert()) for t in (slow_a, slow_b, quick))
        outcomes = await asyncio.gather(*sends)
    finally:
        await one_at_a_time.aclose()
    expected = [("retry", "504"), ("retry", "504"), ("accepted", "201")]
    assert [(o.status, o.detail) for o in outcomes] == expected


async def test_nobody_listening_is_a_connection_retry(sender: WebPushSender) -> None:
    """Connection refused: retry (the service may be back for the next attempt)."""
    nowhere = f"http://127.0.0.1:{free_port()}/push/x"
    target = Target(id="x", platform="webpush", token=nowhere, p256dh=vapid_public_key(PEM), auth="A" * 22)
    outcome = await sender.send(target, make_alert())
    assert outcome.status == "retry" and outcome.detail.startswith("connection")


async def test_a_key_the_subscription_was_not_made_for_is_failed(
    service: PushService, sender: WebPushSender
) -> None:
    """403 (RFC 8292 §4.2, a subscription bound to another applicationServerKey): failed, target kept."""
    other_key = vapid_public_key(generate_vapid_key_pem())
    [target] = targets(service, 1, application_server_key=other_key)
    assert await sender.send(target, make_alert()) == _outcome("failed", "403")
    [matching] = targets(service, 1, application_server_key=vapid_public_key(PEM))
    assert (await sender.send(matching, make_alert())).status == "accepted"


async def test_oversized_payload_is_failed_without_a_request(
    service: PushService, sender: WebPushSender
) -> None:
    [target] = targets(service, 1)
    outcome = await sender.send(target, make_alert(text="x" * 2100))
    assert outcome == _outcome("failed", "payload-too-large")
    assert received_by(service, target) == [] and rejected_of(service, target) == []


async def test_unusable_subscription_keys_are_failed(service: PushService, sender: WebPushSender) -> None:
    [target] = targets(service, 1)
    for broken in (dataclasses.replace(target, p256dh="bm90LWEta2V5"), dataclasses.replace(target, auth="")):
        outcome = await sender.send(broken, make_alert())
        assert outcome == _outcome("failed", "bad-subscription")
    assert received_by(service, target) == []


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (201, None, _outcome("accepted", "201")),
        (202, None, _outcome("accepted", "202")),
        (404, None, _outcome("gone", "404")),
        (410, None, _outcome("gone", "410")),
        (413, None, _outcome("failed", "413")),
        (400, None, _outcome("failed", "400")),
        (401, None, _outcome("failed", "401")),
        (429, "30", _outcome("retry", "429", 30.0)),
        (503, "Thu, 01 Jan 2026 00:01:00 GMT", _outcome("retry", "503", 60.0)),
        (502, "soon", _outcome("retry", "502")),
    ],
)
def test_status_mapping(status: int, retry_after: str | None, expected: Outcome) -> None:
    """RFC 8030 answers → Outcome; Retry-After as seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    now_s = 1767225600.0  # 2026-01-01T00:00:00Z
    assert WebPushSender._outcome(status, retry_after, now_s) == expected


# --- many at once ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_two_thousand_sends_through_one_sender(service: PushService, sender: WebPushSender) -> None:
    """500 concurrent sends (100 at a time): all accepted, each subscription received exactly once,
    over at most 100 connections, with one VAPID signature (PITFALLS 1.10)."""
    subscriptions = targets(service, 500)
    connections_before = service.control("GET", "stats")["connections"]
    alert = make_alert(line_id="en-00000000000000c3")
    gate = asyncio.Semaphore(100)

    async def one(target: Target) -> str:
        async with gate:
            return (await sender.send(target, alert)).status

    statuses = await asyncio.gather(*(one(t) for t in subscriptions))
    assert statuses == ["accepted"] * 500
    tokens = [m["token"] for m in service.received() if m["collapse"] == alert.topic]
    assert sorted(tokens) == sorted(t.token for t in subscriptions)
    assert sender.signer.signatures == 1
    assert service.control("GET", "stats")["connections"] - connections_before <= 100


# --- the service's own checks (what a real push service refuses) ---------------------------


def _encrypted(subscription: Target, data: bytes = b'{"a":1}') -> tuple[bytes, dict[str, str]]:
    keys = {"p256dh": subscription.p256dh, "auth": subscription.auth}
    encoded = WebPusher({"endpoint": subscription.token, "keys": keys}).encode(data)
    return encoded["body"], {"Content-Encoding": "aes128gcm"}


def _authorization(origin: str, **claims: Any) -> str:
    vapid = Vapid02(load_vapid_key(PEM))
    vapid.conf["no-strict"] = True
    return str(vapid.sign({"sub": SUBJECT, "aud": origin, **claims})["Authorization"])


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ("none", 201),
        ("no-ttl", 400),
        ("long-topic", 400),
        ("bad-urgency", 400),
        ("no-auth", 401),
        ("wrong-aud", 401),
        ("exp-past", 401),
        ("exp-25h", 401),
        ("bad-sub", 401),
        ("forged", 401),
        ("garbled-body", 400),
        ("big-body", 413),
    ],
)
def test_the_service_refuses_what_a_push_service_refuses(
    service: PushService, change: str, status: int
) -> None:
    """RFC 8030 §5, RFC 8291, RFC 8292 §3: each fault alone gets the status a real service answers."""
    [target] = targets(service, 1)
    origin = f"http://127.0.0.1:{service.port}"
    body, headers = _encrypted(target)
    headers |= {"TTL": "60", "Topic": "abc", "Authorization": _authorization(origin)}
    now = int(time.time())
    if change == "no-ttl":
        del headers["TTL"]
    elif change == "long-topic":
        headers["Topic"] = "a" * 33
    elif change == "bad-urgency":
        headers["Urgency"] = "urgent"
    elif change == "no-auth":
        del headers["Authorization"]
    elif change == "wrong-aud":
        headers["Authorization"] = _authorization("https://fcm.googleapis.com")
    elif change == "exp-past":
        headers["Authorization"] = _authorization(origin, exp=now - 10)
    elif change == "exp-25h":
        headers["Authorization"] = _authorization(origin, exp=now + 25 * 3600)
    elif change == "bad-sub":
        headers["Authorization"] = _authorization(origin, sub="desk")
    elif change == "forged":
        stranger = vapid_public_key(generate_vapid_key_pem())
        headers["Authorization"] = headers["Authorization"].split(",k=")[0] + ",k=" + stranger
    elif change == "garbled-body":
        body = body[:-1] + bytes([body[-1] ^ 1])
    elif change == "big-body":
        body, headers["Content-Encoding"] = _encrypted(target, b"x" * 4100)[0], "aes128gcm"
    response = httpx.post(target.token, content=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 201:
        assert response.headers["Location"] and response.headers["TTL"] == "60"
        assert received_by(service, target)[0]["payload"] == {"a": 1}
    else:
        assert received_by(service, target) == []
        assert [r["status"] for r in rejected_of(service, target)] == [status]
