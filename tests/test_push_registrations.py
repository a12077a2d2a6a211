"""Push registrations (service/push_api.py, docs/push.md "Registering"): an app or a page registers
a device or a browser anonymously, gets a secret, and only that secret reads, changes or deletes it.

Served in-process against a real Redis; the worker's side (fan-out) is tests/test_push_fanout.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flashwire.core.keys import Keys
from flashwire.core.push_models import parse_registration
from flashwire.core.push_registry import PushRegistry, RegistrationLimit
from flashwire.core.vapid import ensure_key_file, vapid_public_key
from flashwire.dev.redis_server import RedisProcess
from tests.conftest import InProcessApp, serve_in_process

PUSH_HOST = "push.example.net"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def browser_subscription() -> dict[str, Any]:
    """A subscription as PushSubscription.toJSON() gives it, with keys made as a browser makes them."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": f"https://{PUSH_HOST}/wpush/v2/{os.urandom(8).hex()}",
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(os.urandom(16))},
    }


def push_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    key = ensure_key_file(tmp_path / "vapid.pem")
    return {
        "FLASHWIRE_VAPID_PRIVATE_KEY_FILE": str(key),
        "FLASHWIRE_VAPID_SUBJECT": "mailto:alerts@newsroom.example",
        "FLASHWIRE_WEBPUSH_HOSTS": PUSH_HOST,
        "FLASHWIRE_APNS_KEY_FILE": str(tmp_path / "apns.p8"),
        "FLASHWIRE_APNS_KEY_ID": "ABC123DEFG",
        "FLASHWIRE_APNS_TEAM_ID": "DEF123GHIJ",
        "FLASHWIRE_APNS_TOPIC": "net.example.news",
        **extra,
    }


@pytest.fixture
async def push_app(shared_redis_server: RedisProcess, tmp_path: Path) -> AsyncIterator[InProcessApp]:
    async with serve_in_process(
        shared_redis_server, **push_env(tmp_path, FLASHWIRE_KEY_PREFIX=tmp_path.name)
    ) as app:
        yield app


async def register(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/v1/push/registrations", json=body)


def webpush(**choices: Any) -> dict[str, Any]:
    return {"platform": "webpush", "subscription": browser_subscription(), "editions": ["en"], **choices}


async def test_config_gives_the_platforms_and_the_vapid_public_key(
    push_app: InProcessApp, tmp_path: Path
) -> None:
    response = await push_app.client.get("/api/v1/push")
    assert response.status_code == 200
    config = response.json()
    assert config["platforms"] == ["webpush", "apns"]
    assert config["vapid_public_key"] == vapid_public_key((tmp_path / "vapid.pem").read_text())
    assert len(base64.urlsafe_b64decode(config["vapid_public_key"] + "=")) == 65
    assert config["default_urgency"] == "flash"


async def test_register_read_change_and_delete_only_with_the_secret(push_app: InProcessApp) -> None:
    client = push_app.client
    body = webpush(
        topics=["politics"], quiet_hours={"start": "23:00", "end": "06:30", "time_zone": "Asia/Qatar"}
    )
    created = await register(client, body)
    assert created.status_code == 201, created.text
    registration = created.json()
    reg_id, secret = registration["id"], registration["secret"]
    assert registration["urgency"] == "flash"  # the default: a push interrupts
    assert created.headers["location"] == f"/api/v1/push/registrations/{reg_id}"
    path = f"/api/v1/push/registrations/{reg_id}"
    bearer = {"Authorization": f"Bearer {secret}"}

    read = await client.get(path, headers=bearer)
    assert read.status_code == 200
    assert "secret" not in read.json() and read.json()["topics"] == ["politics"]
    assert (await client.get(path)).status_code == 401
    wrong = await client.get(path, headers={"Authorization": "Bearer fwr_wrong"})
    unknown = await client.get("/api/v1/push/registrations/nosuchid", headers=bearer)
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json() == unknown.json()  # an id cannot be probed

    changed = await client.put(path, headers=bearer, json={"editions": ["en", "ar"], "urgency": "urgent"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["editions"] == ["ar", "en"] and changed.json()["urgency"] == "urgent"
    redis = push_app.redis()
    try:
        keys = Keys(push_app.settings.key_prefix)
        assert await redis.zscore(keys.push_targets("ar", "urgent"), reg_id) == 0
        assert await redis.zscore(keys.push_targets("en", "flash"), reg_id) is None  # moved, not copied
        deleted = await client.delete(path, headers=bearer)
        assert deleted.status_code == 204
        assert (await client.get(path, headers=bearer)).status_code == 404
        assert await redis.zcard(keys.push_targets("en", "urgent")) == 0
    finally:
        await redis.aclose()


async def test_the_same_target_registered_again_is_one_registration_with_a_new_secret(
    push_app: InProcessApp,
) -> None:
    client = push_app.client
    body = webpush()
    first = (await register(client, body)).json()
    again = await register(client, {**body, "editions": ["es"]})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["editions"] == ["es"]
    path = f"/api/v1/push/registrations/{first['id']}"
    assert (await client.get(path, headers={"Authorization": f"Bearer {first['secret']}"})).status_code == 404
    assert (
        await client.get(path, headers={"Authorization": f"Bearer {again.json()['secret']}"})
    ).status_code == 200
    redis = push_app.redis()
    try:
        assert await redis.zcard(Keys(push_app.settings.key_prefix).push_targets("en", "flash")) == 0
        assert await redis.zcard(Keys(push_app.settings.key_prefix).push_targets("es", "flash")) == 1
    finally:
        await redis.aclose()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"subscription": {**browser_subscription(), "endpoint": "https://internal.corp/admin"}},
            "subscription.endpoint",
        ),
        (
            {"subscription": {**browser_subscription(), "endpoint": f"http://{PUSH_HOST}/x"}},
            "subscription.endpoint",
        ),
        (
            {"subscription": {**browser_subscription(), "endpoint": f"https://u:p@{PUSH_HOST}/x"}},
            "subscription.endpoint",
        ),
        (
            {
                "subscription": {
                    **browser_subscription(),
                    "keys": {"p256dh": b64url(b"\x04" + b"1" * 10), "auth": b64url(b"a" * 16)},
                }
            },
            "subscription.keys.p256dh",
        ),
        (
            {
                "subscription": {
                    **browser_subscription(),
                    "keys": {"p256dh": b64url(b"\x05" + b"1" * 64), "auth": b64url(b"a" * 16)},
                }
            },
            "subscription.keys.p256dh",
        ),
        (
            {
                "subscription": {
                    **browser_subscription(),
                    "keys": {"p256dh": "not base64!", "auth": b64url(b"a" * 16)},
                }
            },
            "subscription.keys.p256dh",
        ),
        (
            {
                "subscription": {
                    **browser_subscription(),
                    "keys": {"p256dh": browser_subscription()["keys"]["p256dh"], "auth": b64url(b"a" * 8)},
                }
            },
            "subscription.keys.auth",
        ),
        # The default port only: one that drops packets would hold a send slot for every alert.
        (
            {"subscription": {**browser_subscription(), "endpoint": f"https://{PUSH_HOST}:9/x"}},
            "subscription.endpoint",
        ),
        ({"subscription": None}, "subscription"),
        ({"token": "abc"}, "token"),
        ({"editions": []}, "editions"),
        ({"editions": ["fr"]}, "editions[0]"),
        ({"topics": ["gossip"]}, "topics[0]"),
        ({"urgency": "whenever"}, "urgency"),
        ({"language": "not a language"}, "language"),
        (
            {"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Olympus"}},
            "quiet_hours.time_zone",
        ),
        ({"quiet_hours": {"start": "24:00", "end": "07:00", "time_zone": "UTC"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "07:00", "end": "07:00", "time_zone": "UTC"}}, "quiet_hours.end"),
        ({"platform": "fcm", "subscription": None, "token": "x" * 40}, "platform"),
        ({"platform": "apns", "subscription": None, "token": "zz" * 32}, "token"),
        ({"platform": "apns", "subscription": None}, "token"),
        ({"platform": "apns", "token": "ab" * 32}, "subscription"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_registrations_are_refused_naming_the_field(
    push_app: InProcessApp, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**webpush(), **change}.items() if v is not None}
    response = await register(push_app.client, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


async def test_apns_tokens_are_one_registration_whatever_their_case(push_app: InProcessApp) -> None:
    token = "a1B2" * 16
    upper = (await register(push_app.client, {"platform": "apns", "token": token, "editions": ["ar"]})).json()
    lower = await register(push_app.client, {"platform": "apns", "token": token.lower(), "editions": ["ar"]})
    assert lower.status_code == 200 and lower.json()["id"] == upper["id"]
    assert lower.json()["environment"] == "production"


async def test_registrations_per_client_address_are_bounded(
    shared_redis_server: RedisProcess, tmp_path: Path
) -> None:
    env = push_env(
        tmp_path, FLASHWIRE_KEY_PREFIX=tmp_path.name, FLASHWIRE_PUSH_MAX_REGISTRATIONS_PER_CLIENT="3"
    )
    async with serve_in_process(shared_redis_server, **env) as app:
        bodies = [webpush() for _ in range(4)]
        assert [(await register(app.client, body)).status_code for body in bodies[:3]] == [201] * 3
        refused = await register(app.client, bodies[3])
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "registration_limit"
        # The same target again is not one more; deleting one makes room.
        assert (await register(app.client, bodies[0])).status_code == 200
        first = (await register(app.client, bodies[1])).json()
        path = f"/api/v1/push/registrations/{first['id']}"
        await app.client.delete(path, headers={"Authorization": f"Bearer {first['secret']}"})
        assert (await register(app.client, bodies[3])).status_code == 201


async def test_registrations_are_rate_limited_per_address(
    shared_redis_server: RedisProcess, tmp_path: Path
) -> None:
    env = push_env(
        tmp_path, FLASHWIRE_KEY_PREFIX=tmp_path.name, FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT="2/minute"
    )
    async with serve_in_process(shared_redis_server, **env) as app:
        statuses = [(await register(app.client, webpush())).status_code for _ in range(3)]
        assert statuses == [201, 201, 429]
        refused = await register(app.client, webpush())
        assert int(refused.headers["retry-after"]) >= 1
        assert "FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT" in refused.json()["error"]["message"]


async def test_a_partner_page_may_register_across_origins(push_app: InProcessApp) -> None:
    origin = {"Origin": "https://partner.example"}
    preflight = await push_app.client.options(
        "/api/v1/push/registrations",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://partner.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    created = await push_app.client.post("/api/v1/push/registrations", json=webpush(), headers=origin)
    assert created.headers["access-control-allow-origin"] == "https://partner.example"
    refused = await push_app.client.post("/api/v1/push/registrations", json={"platform": "x"}, headers=origin)
    assert refused.status_code == 422
    assert (
        refused.headers["access-control-allow-origin"] == "https://partner.example"
    )  # the page can read why


async def test_with_no_platform_configured_registrations_are_refused(app: InProcessApp) -> None:
    config = (await app.client.get("/api/v1/push")).json()
    assert config["platforms"] == [] and config["vapid_public_key"] is None
    response = await register(app.client, webpush())
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "platform"
    assert "none" in response.json()["error"]["message"]


async def test_taking_over_a_target_counts_against_the_new_address(push_app: InProcessApp) -> None:
    """Re-registering another address's target moves it (and its count) to the new address: a
    client cannot hold more than the bound by taking over targets. Registrations expire unless
    stored again within 90 days (apps and pages register again when they start)."""
    redis = push_app.redis()
    try:
        registry = PushRegistry(redis, Keys(push_app.settings.key_prefix))
        bodies = [parse_registration(webpush(), push_app.settings) for _ in range(4)]
        for body in bodies[:2]:
            await registry.register(body, client="203.0.113.1", now_ms=1, max_per_client=2)
        for body in bodies[2:]:
            await registry.register(body, client="203.0.113.2", now_ms=1, max_per_client=2)
        with pytest.raises(RegistrationLimit):
            await registry.register(bodies[0], client="203.0.113.2", now_ms=2, max_per_client=2)
        # Its own again is no new one; the first address, one below its bound now, may take it back.
        stored, _ = await registry.register(bodies[2], client="203.0.113.2", now_ms=3, max_per_client=2)
        assert not stored.created
        ttl = await redis.ttl(Keys(push_app.settings.key_prefix).push_registration(stored.record["id"]))
        assert 89 * 86_400 < ttl <= 90 * 86_400
    finally:
        await redis.aclose()
