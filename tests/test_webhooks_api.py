"""The webhook registration and admin API in process (the `app` fixture: real Redis, no worker).

Who may do what (partner, admin, editor), the SSRF rule at registration (https only, no internal
address: FLASHWIRE_WEBHOOK_ALLOW_PRIVATE is off here), the secret shown once, rotation, bounds
(endpoints per partner, the rate limit) and validation naming the field.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from flashwire.core.webhook_models import EndpointRecord
from flashwire.dev.redis_server import RedisProcess
from tests.conftest import InProcessApp, auth, serve_in_process

# A public address as a literal: registration resolves names, and these machines have no DNS.
PUBLIC = "https://93.184.215.14/hooks/flashwire"


@pytest.fixture
async def limited(shared_redis_server: RedisProcess) -> AsyncIterator[InProcessApp]:
    """The app with two endpoints per partner and three endpoint changes a minute per token."""
    redis = Redis.from_url(shared_redis_server.url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    env = {"FLASHWIRE_WEBHOOK_MAX_ENDPOINTS": "2", "FLASHWIRE_WEBHOOK_RATE_LIMIT": "3/minute"}
    async with serve_in_process(shared_redis_server, **env) as served:
        yield served


async def _register(app: InProcessApp, token: str, **fields: Any) -> Any:
    return await app.client.post(
        "/api/v1/webhooks", json={"url": PUBLIC, "editions": ["en"], **fields}, headers=auth(token)
    )


async def test_a_partner_registers_and_gets_its_secret_once(app: InProcessApp) -> None:
    partner = await app.token("partner", ["en", "ar"], name="Wire partner")
    response = await _register(app, partner, topics=["politics"], min_urgency="urgent")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) == 32
    assert (
        body["status"] == "active"
        and body["disabled_reason"] is None
        and body["owner_name"] == "Wire partner"
    )
    assert (body["editions"], body["topics"], body["min_urgency"]) == (["en"], ["politics"], "urgent")
    shown = await app.client.get(f"/api/v1/webhooks/{body['id']}", headers=auth(partner))
    assert shown.status_code == 200 and "secret" not in shown.json()
    listed = await app.client.get("/api/v1/webhooks", headers=auth(partner))
    assert [e["id"] for e in listed.json()["endpoints"]] == [body["id"]]
    default = (await _register(app, partner)).json()
    assert (default["topics"], default["min_urgency"]) == ([], "routine")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://93.184.215.14/hook", "https"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.0.0.7/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:192.168.0.1]/hook", "private"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
    ],
)
async def test_registration_refuses_internal_and_plain_http_endpoints(
    app: InProcessApp, url: str, why: str
) -> None:
    """PITFALLS 2.6: without FLASHWIRE_WEBHOOK_ALLOW_PRIVATE, https to a public address only."""
    partner = await app.token("partner", ["en"])
    response = await _register(app, partner, url=url)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "url" and why in error["message"]


async def test_who_may_see_and_change_what(app: InProcessApp) -> None:
    """An editor may not; a partner sees only its own (another's is 404) and only its editions; an
    admin sees every endpoint and alone lists deliveries."""
    editor = await app.token("editor", ["en"])
    partner, other = await app.token("partner", ["en"]), await app.token("partner", ["en"], name="Other")
    admin = await app.token("admin", ["*"], name="Root")
    assert (await _register(app, editor)).status_code == 403
    assert (await app.client.get("/api/v1/webhooks", headers=auth(editor))).status_code == 403
    outside = await _register(app, partner, editions=["ar"])
    assert outside.status_code == 403 and outside.json()["error"]["field"] == "editions"
    endpoint = (await _register(app, partner)).json()
    path = f"/api/v1/webhooks/{endpoint['id']}"
    for method in ("GET", "DELETE"):
        assert (await app.client.request(method, path, headers=auth(other))).status_code == 404
    assert (await app.client.get("/api/v1/webhooks", headers=auth(other))).json()["endpoints"] == []
    assert len((await app.client.get("/api/v1/webhooks", headers=auth(admin))).json()["endpoints"]) == 1
    assert (await app.client.get(f"{path}/deliveries", headers=auth(partner))).status_code == 403
    deliveries = await app.client.get(f"{path}/deliveries", headers=auth(admin))
    assert deliveries.status_code == 200 and deliveries.json()["deliveries"] == []


async def test_filters_change_and_a_bad_one_is_named(app: InProcessApp) -> None:
    partner = await app.token("partner", ["en"])
    endpoint = (await _register(app, partner)).json()
    path = f"/api/v1/webhooks/{endpoint['id']}"
    changed = await app.client.patch(
        path, json={"topics": ["europe"], "min_urgency": "flash"}, headers=auth(partner)
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["topics"], changed.json()["min_urgency"], changed.json()["url"]) == (
        ["europe"],
        "flash",
        PUBLIC,
    )
    bad = await app.client.patch(path, json={"topics": ["nowhere"]}, headers=auth(partner))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "topics[0]"
    unknown = await app.client.patch(path, json={"colour": "red"}, headers=auth(partner))
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "colour"
    internal = await app.client.patch(path, json={"url": "https://192.168.1.1/"}, headers=auth(partner))
    assert internal.status_code == 422 and internal.json()["error"]["field"] == "url"
    assert (await app.client.delete(path, headers=auth(partner))).status_code == 204
    assert (await app.client.get(path, headers=auth(partner))).status_code == 404


async def test_rotation_keeps_the_previous_secret_signing_for_the_overlap(app: InProcessApp) -> None:
    """PITFALLS 2.5: after a rotation both secrets sign until the overlap ends; a second rotation
    retires the oldest."""
    partner = await app.token("partner", ["en"])
    endpoint = (await _register(app, partner)).json()
    rotated = await app.client.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=auth(partner))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != endpoint["secret"]
    redis = app.redis()
    try:
        record = EndpointRecord.model_validate_json(
            await redis.hget(app.keys.webhook_endpoints, endpoint["id"])
        )
        assert record.signing_secrets(record.updated_at_ms) == [new, endpoint["secret"]]
        assert record.signing_secrets(record.updated_at_ms + 86_400_001) == [new]
        await app.client.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=auth(partner))
        record = EndpointRecord.model_validate_json(
            await redis.hget(app.keys.webhook_endpoints, endpoint["id"])
        )
        assert endpoint["secret"] not in record.signing_secrets(record.updated_at_ms)
    finally:
        await redis.aclose()
    shown = await app.client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=auth(partner))
    assert shown.json()["previous_secret_until"] is not None


async def test_replay_takes_exactly_one_of_delivery_id_and_since(app: InProcessApp) -> None:
    partner, admin = await app.token("partner", ["en"]), await app.token("admin", ["*"], name="Root")
    endpoint = (await _register(app, partner)).json()
    path = f"/api/v1/webhooks/{endpoint['id']}/replay"
    for body in ({}, {"delivery_id": "1-0", "since": "2026-12-07T00:00:00Z"}):
        response = await app.client.post(path, json=body, headers=auth(admin))
        assert response.status_code == 422 and response.json()["error"]["field"] == "body"
    missing = await app.client.post(path, json={"delivery_id": "1-0"}, headers=auth(admin))
    assert missing.status_code == 404
    since = await app.client.post(path, json={"since": "2026-12-07T00:00:00Z"}, headers=auth(admin))
    assert since.status_code == 201 and since.json()["replayed"] == []
    assert (
        await app.client.post(path, json={"delivery_id": "1-0"}, headers=auth(partner))
    ).status_code == 403


async def test_endpoints_per_partner_and_changes_per_token_are_bounded(limited: InProcessApp) -> None:
    partner = await limited.token("partner", ["en"])
    assert (await _register(limited, partner)).status_code == 201
    assert (await _register(limited, partner)).status_code == 201
    third = await _register(limited, partner)
    assert third.status_code == 409 and "FLASHWIRE_WEBHOOK_MAX_ENDPOINTS" in third.json()["error"]["message"]
    fourth = await _register(limited, partner)
    assert fourth.status_code == 429 and int(fourth.headers["retry-after"]) >= 1


async def test_revoking_a_partners_token_disables_its_endpoints(app: InProcessApp) -> None:
    """Nothing more goes to a partner whose token was revoked (it can no longer even see or delete
    its endpoints); an admin sees why, and may enable them again."""
    partner = await app.token("partner", ["en"], name="Wire partner")
    other = await app.token("partner", ["en"], name="Other partner")
    admin = await app.token("admin", ["en"], name="Ada")
    revoked_endpoint = (await _register(app, partner)).json()["id"]
    kept_endpoint = (await _register(app, other)).json()["id"]
    token_id = partner.split("_")[1]
    revoked = await app.client.post(f"/api/v1/tokens/{token_id}/revoke", headers=auth(admin))
    assert revoked.status_code == 200, revoked.text
    shown = (await app.client.get(f"/api/v1/webhooks/{revoked_endpoint}", headers=auth(admin))).json()
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "its partner token was revoked")
    kept = (await app.client.get(f"/api/v1/webhooks/{kept_endpoint}", headers=auth(admin))).json()
    assert kept["status"] == "active"
