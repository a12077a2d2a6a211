"""Rate limits shared by every node (issue 10, finding 4): desk actions per token, failed
authentications per client address, token management per admin; 429 with Retry-After, counted in
Redis, and a deliberate policy when Redis cannot count (service/rate_limits.py).

Driven from outside, as an attacker or a runaway script would: two real `flashwire serve` nodes
on one real redis-server, real HTTP clients, a second client address by binding the client's
socket to 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface). Limits are set
low, per node, through the environment; windows of 2 seconds keep the waits short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.settings import Settings
from flashwire.service.openapi import openapi_document
from tests.conftest import Reader, ServiceNode, Stack, auth, open_reader

pytestmark = pytest.mark.slow

WRONG_TOKENS = ["fwt_000000000000_guess", "fwt_000000000000_guess2", "not-even-a-token", "fwt__"]


@asynccontextmanager
async def client(node: ServiceNode, source: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `node` whose connections come from the address `source`."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=node.url, transport=transport, timeout=10) as http:
        yield http


def assert_rate_limited(response: httpx.Response, variable: str, window_s: int) -> int:
    """A 429 with the API's error body naming the limit's setting, and Retry-After in whole seconds
    within the window; returns Retry-After."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["status"] == 429 and error["code"] == "rate_limited", error
    assert variable in error["message"], error
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window_s, retry_after
    assert f"retry in {retry_after} s" in error["message"], error
    return int(retry_after)


async def post(http: httpx.AsyncClient, token: str, text: str, **headers: str) -> httpx.Response:
    return await http.post(
        "/api/v1/lines", json={"edition": "en", "text": text}, headers={**auth(token), **headers}
    )


async def test_desk_actions_are_limited_per_token_across_two_nodes(
    stack: Stack, readers: list[Reader]
) -> None:
    """FLASHWIRE_POST_RATE_LIMIT=5/minute on two nodes: three posts on A, a post and a pin on B use
    the token's five actions; the next post (on either node) and a correction are 429 with
    Retry-After. The replay of an answered Idempotency-Key is not an action and is still answered;
    a second token is unaffected. Every 201 reaches the ticker; nothing refused reaches the desk."""
    stack.worker()
    env = {"FLASHWIRE_POST_RATE_LIMIT": "5/minute"}
    node_a, node_b = stack.service(**env), stack.service(**env)
    chief = await stack.token(role="chief", name="Chief")
    other = await stack.token(name="Basma")
    reader = await open_reader(node_a.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")
    posted: list[str] = []
    async with client(node_a) as on_a, client(node_b) as on_b:
        first = await post(on_a, chief, "Line 1 on node A", **{"Idempotency-Key": "first-post"})
        assert first.status_code == 201, first.text
        posted.append(first.json()["id"])
        for text in ("Line 2 on node A", "Line 3 on node A"):
            response = await post(on_a, chief, text)
            assert response.status_code == 201, response.text
            posted.append(response.json()["id"])
        response = await post(on_b, chief, "Line 4 on node B")
        assert response.status_code == 201, response.text
        posted.append(response.json()["id"])
        pinned = await on_b.post(f"/api/v1/lines/{posted[0]}/pin", headers=auth(chief))
        assert pinned.status_code == 201, pinned.text

        # The sixth action, on either node, whatever the action.
        assert_rate_limited(await post(on_b, chief, "Refused on node B"), "FLASHWIRE_POST_RATE_LIMIT", 60)
        assert_rate_limited(await post(on_a, chief, "Refused on node A"), "FLASHWIRE_POST_RATE_LIMIT", 60)
        correction = await on_a.post(
            f"/api/v1/lines/{posted[1]}/corrections", json={"text": "Refused correction"}, headers=auth(chief)
        )
        assert_rate_limited(correction, "FLASHWIRE_POST_RATE_LIMIT", 60)
        # A client that lost the first answer gets it again: a replay, not a new action.
        replay = await post(on_b, chief, "Line 1 on node A", **{"Idempotency-Key": "first-post"})
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true", replay.text
        assert replay.json()["id"] == posted[0]

        for http in (on_a, on_b):
            response = await post(http, other, f"Another token's line via {http.base_url.port}")
            assert response.status_code == 201, response.text
            posted.append(response.json()["id"])

    events = await reader.events(len(posted) + 1)
    assert sorted(e["line"]["id"] for e in events if e["type"] == "line") == sorted(posted)
    assert [(e["type"], e["line"]["id"]) for e in events if e["type"] != "line"] == [("update", posted[0])]
    redis = stack.redis()
    try:
        assert await redis.xlen(stack.keys.desk) == len(posted) + 1  # the posts and the pin, nothing else
    finally:
        await redis.aclose()
    for node in (node_a, node_b):
        assert "Traceback" not in node.log()


async def test_a_post_counts_only_once_its_token_may_post_in_its_edition(stack: Stack) -> None:
    """FLASHWIRE_POST_RATE_LIMIT=3/minute: an en editor's posts to ar and its embargoed post (which
    needs `schedule`) are refused 403 and cost nothing, as a follow-up refused 403 does; then a post
    to en (201), one with a bad field (422: a refusal once the token may post there counts) and
    another (201) use the three, and the next is 429. On the old code the first post to en was
    already 429: every 403 had taken a slot."""
    node = stack.service(FLASHWIRE_POST_RATE_LIMIT="3/minute")
    editor = await stack.token(name="Eddie")
    chief = await stack.token(role="chief", editions=["en", "ar"], name="Chiara")
    later = iso_from_ms(now_ms() + 3600_000)
    async with client(node) as http:
        theirs = await http.post(
            "/api/v1/lines", json={"edition": "ar", "text": "Chief's line"}, headers=auth(chief)
        )
        assert theirs.status_code == 201, theirs.text
        refused = [
            await http.post(
                "/api/v1/lines", json={"edition": "ar", "text": f"Not mine {n}"}, headers=auth(editor)
            )
            for n in range(4)
        ]
        refused += [
            await http.post(
                "/api/v1/lines",
                json={"edition": "en", "text": f"Embargoed {n}", "embargo_until": later},
                headers=auth(editor),
            )
            for n in range(2)
        ]
        refused.append(
            await http.post(f"/api/v1/lines/{theirs.json()['id']}/retraction", headers=auth(editor))
        )
        assert [response.status_code for response in refused] == [403] * 7, [r.text for r in refused]
        assert (await post(http, editor, "First of three")).status_code == 201
        bad = await http.post(
            "/api/v1/lines",
            json={"edition": "en", "text": "Bad link", "url": "ftp://x"},
            headers=auth(editor),
        )
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "url", bad.text
        assert (await post(http, editor, "Third of three")).status_code == 201
        assert_rate_limited(await post(http, editor, "Over the limit"), "FLASHWIRE_POST_RATE_LIMIT", 60)


async def test_a_concurrent_burst_on_both_nodes_gets_exactly_the_limit(stack: Stack) -> None:
    """30 posts with one token sent at once, half to each node, under FLASHWIRE_POST_RATE_LIMIT=5/minute:
    exactly 5 are accepted (the count is one atomic step in Redis, not a read then a write), the
    other 25 are 429, and the desk holds exactly the 5."""
    env = {"FLASHWIRE_POST_RATE_LIMIT": "5/minute"}
    node_a, node_b = stack.service(**env), stack.service(**env)
    editor = await stack.token()
    async with client(node_a) as on_a, client(node_b) as on_b:
        answers = await asyncio.gather(
            *(post((on_a, on_b)[n % 2], editor, f"Burst line {n}") for n in range(30))
        )
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [201] * 5 + [429] * 25, statuses
    redis = stack.redis()
    try:
        assert await redis.xlen(stack.keys.desk) == 5
    finally:
        await redis.aclose()


async def test_failed_authentications_block_the_address_before_its_token_is_checked(stack: Stack) -> None:
    """FLASHWIRE_AUTH_FAILURE_RATE_LIMIT=4/minute on two nodes: four wrong credentials from one
    address (two per node, of every kind: unknown, malformed, another scheme) get 401; the fifth
    gets 429, and so does that address's valid token on both nodes, for reads and writes, while
    another address uses the same token and is told 401, not 429, for a wrong one. Requests
    without credentials are not refused."""
    env = {"FLASHWIRE_AUTH_FAILURE_RATE_LIMIT": "4/minute"}
    node_a, node_b = stack.service(**env), stack.service(**env)
    editor = await stack.token()
    async with client(node_a) as on_a, client(node_b) as on_b:
        failures = [
            (on_a, auth(WRONG_TOKENS[0])),
            (on_b, auth(WRONG_TOKENS[2])),
            (on_a, {"Authorization": "Basic ZWRpdG9yOnBhc3N3b3Jk"}),
            (on_b, auth(WRONG_TOKENS[1])),
        ]
        for http, headers in failures:
            response = await http.get("/api/v1/me", headers=headers)
            assert response.status_code == 401, response.text
        assert_rate_limited(
            await on_a.get("/api/v1/me", headers=auth(WRONG_TOKENS[3])),
            "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT",
            60,
        )
        for http in (on_a, on_b):
            refused = await http.get("/api/v1/me", headers=auth(editor))
            assert_rate_limited(refused, "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT", 60)
            assert refused.json()["error"]["field"] == "Authorization"
            assert_rate_limited(
                await post(http, editor, "Never posted"), "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT", 60
            )
        # No credentials: a public endpoint answers, and a private one still says what it needs.
        assert (await on_a.get("/api/v1/config")).status_code == 200
        assert (await on_b.get("/api/v1/me")).status_code == 401

    for node in (node_a, node_b):
        async with client(node, source="127.0.0.2") as elsewhere:
            assert (await elsewhere.get("/api/v1/me", headers=auth(editor))).status_code == 200
            assert (await elsewhere.get("/api/v1/me", headers=auth(WRONG_TOKENS[0]))).status_code == 401
    redis = stack.redis()
    try:
        assert await redis.xlen(stack.keys.desk) == 0
    finally:
        await redis.aclose()


async def test_behind_a_trusted_proxy_the_client_it_reports_is_limited(stack: Stack) -> None:
    """FLASHWIRE_TRUSTED_PROXIES=127.0.0.1, FLASHWIRE_AUTH_FAILURE_RATE_LIMIT=2/minute: failures of
    the client a trusted proxy reports in X-Forwarded-For block that client, not the proxy nor the
    other clients behind it; an IPv6 client is counted by its /64, so moving within it does not
    help."""
    node = stack.service(FLASHWIRE_TRUSTED_PROXIES="127.0.0.1", FLASHWIRE_AUTH_FAILURE_RATE_LIMIT="2/minute")
    editor = await stack.token()

    async def me(http: httpx.AsyncClient, token: str, forwarded_for: str | None) -> httpx.Response:
        headers = auth(token) | ({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
        return await http.get("/api/v1/me", headers=headers)

    async with client(node) as proxy:
        for attacker, same_client, neighbour in (
            ("198.51.100.7", "198.51.100.7", "198.51.100.8"),
            ("2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:3::1"),
        ):
            for wrong in WRONG_TOKENS[:2]:
                assert (await me(proxy, wrong, attacker)).status_code == 401
            blocked = await me(proxy, editor, same_client)
            assert_rate_limited(blocked, "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT", 60)
            assert (await me(proxy, editor, neighbour)).status_code == 200
        assert (await me(proxy, editor, None)).status_code == 200  # the proxy's own address


async def test_token_management_is_limited_per_admin(stack: Stack) -> None:
    """FLASHWIRE_ADMIN_RATE_LIMIT=3/minute on two nodes: a creation on A, one on B and a revocation
    on A use the admin's three actions; the next creation and revocation (either node) are 429 and
    change nothing; listing is not limited; another admin is unaffected."""
    env = {"FLASHWIRE_ADMIN_RATE_LIMIT": "3/minute"}
    node_a, node_b = stack.service(**env), stack.service(**env)
    admin = await stack.token(role="admin", editions=["*"], name="Admin")
    second_admin = await stack.token(role="admin", editions=["*"], name="Second admin")

    def wanted(name: str) -> dict[str, Any]:
        return {"name": name, "role": "editor", "editions": ["en"]}

    async with client(node_a) as on_a, client(node_b) as on_b:
        created = await on_a.post("/api/v1/tokens", json=wanted("One"), headers=auth(admin))
        assert created.status_code == 201, created.text
        assert (await on_b.post("/api/v1/tokens", json=wanted("Two"), headers=auth(admin))).status_code == 201
        revoked = await on_a.post(f"/api/v1/tokens/{created.json()['id']}/revoke", headers=auth(admin))
        assert revoked.status_code == 200, revoked.text

        refused = await on_b.post("/api/v1/tokens", json=wanted("Three"), headers=auth(admin))
        assert_rate_limited(refused, "FLASHWIRE_ADMIN_RATE_LIMIT", 60)
        some_id = created.json()["id"]
        assert_rate_limited(
            await on_a.post(f"/api/v1/tokens/{some_id}/revoke", headers=auth(admin)),
            "FLASHWIRE_ADMIN_RATE_LIMIT",
            60,
        )
        listed = await on_a.get("/api/v1/tokens", headers=auth(admin))
        assert listed.status_code == 200
        assert sorted(t["name"] for t in listed.json()["tokens"]) == ["Admin", "One", "Second admin", "Two"]

        by_second = await on_b.post("/api/v1/tokens", json=wanted("Four"), headers=auth(second_admin))
        assert by_second.status_code == 201, by_second.text


async def test_requests_pass_again_once_retry_after_has_passed(stack: Stack) -> None:
    """Two-second windows on one node: over each limit (admin, desk, failed authentication) the
    answer is 429; once its Retry-After has passed, the same token (and the blocked address's valid
    token) is served again."""
    env = {
        "FLASHWIRE_POST_RATE_LIMIT": "2/2second",
        "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT": "2/2second",
        "FLASHWIRE_ADMIN_RATE_LIMIT": "1/2second",
    }
    node = stack.service(**env)
    admin = await stack.token(role="admin", editions=["*"], name="Admin")
    wanted = {"name": "Night desk", "role": "editor", "editions": ["en"]}
    free_at = 0.0  # monotonic time by which every Retry-After has passed

    def note(retry_after: int) -> None:
        nonlocal free_at
        free_at = max(free_at, time.monotonic() + retry_after)

    async with client(node) as http:
        assert (await http.post("/api/v1/tokens", json=wanted, headers=auth(admin))).status_code == 201
        refused = await http.post("/api/v1/tokens", json=wanted, headers=auth(admin))
        note(assert_rate_limited(refused, "FLASHWIRE_ADMIN_RATE_LIMIT", 2))
        for n in range(2):
            assert (await post(http, admin, f"Within the window {n}")).status_code == 201
        note(assert_rate_limited(await post(http, admin, "Over the window"), "FLASHWIRE_POST_RATE_LIMIT", 2))
        for wrong in WRONG_TOKENS[:2]:
            assert (await http.get("/api/v1/me", headers=auth(wrong))).status_code == 401
        blocked = await http.get("/api/v1/me", headers=auth(admin))
        note(assert_rate_limited(blocked, "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT", 2))

        await asyncio.sleep(max(0.0, free_at - time.monotonic()) + 0.05)
        assert (await http.get("/api/v1/me", headers=auth(admin))).status_code == 200
        assert (await post(http, admin, "After the window")).status_code == 201
        assert (await http.post("/api/v1/tokens", json=wanted, headers=auth(admin))).status_code == 201


async def test_when_redis_cannot_count_desk_and_admin_fail_closed_and_authentication_fails_open(
    stack: Stack,
) -> None:
    """A Redis that refuses writes (min-replicas-to-write without a replica: NOREPLICAS) cannot count:
    posts and token creations get 503 with Retry-After (fail closed), while authentication goes
    on (fail open: a valid token reads, a wrong one is 401, not 500); one warning per limit, no
    traceback. With Redis gone, the same requests are 503, and once Redis refuses nothing, posts
    are counted again."""
    node = stack.service()
    admin = await stack.token(role="admin", editions=["*"], name="Admin")
    redis = stack.redis()
    try:
        await redis.config_set("min-replicas-to-write", 1)
        async with client(node) as http:
            for _ in range(2):
                refused = await post(http, admin, "Cannot be counted")
                assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
                assert refused.json()["error"]["code"] == "unavailable"
                created = await http.post(
                    "/api/v1/tokens",
                    json={"name": "X", "role": "editor", "editions": ["en"]},
                    headers=auth(admin),
                )
                assert created.status_code == 503 and created.headers["retry-after"] == "1", created.text
                assert (await http.get("/api/v1/me", headers=auth(WRONG_TOKENS[0]))).status_code == 401
                assert (await http.get("/api/v1/me", headers=auth(admin))).status_code == 200
            log = node.log()
            for name, policy in (("post", "refusing"), ("admin", "refusing"), ("auth-failure", "letting")):
                warnings = [
                    line for line in log.splitlines() if f"rate limit {name} cannot be counted" in line
                ]
                assert len(warnings) == 1 and policy in warnings[0], log
            await redis.config_set("min-replicas-to-write", 0)
            assert (await post(http, admin, "Counted again")).status_code == 201
            assert "rate limit post is counted again" in node.log()

            stack.redis_server.kill()
            for headers in (auth(admin), auth(WRONG_TOKENS[0])):
                response = await http.get("/api/v1/me", headers=headers)
                assert response.status_code == 503, response.text
            assert (await post(http, admin, "Redis is gone")).status_code == 503
    finally:
        await redis.aclose()
    assert "Traceback" not in node.log(), node.log()


def test_the_openapi_document_says_which_operations_answer_429_with_retry_after() -> None:
    """Every operation that takes a token documents 429 (the failed-authentication limit), with a
    Retry-After header; the public ones (pages, feeds, /sse, health, config) do not, except the
    anonymous push registration, limited per client address (FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT)."""
    limited_public = {("post", "/api/v1/push/registrations")}
    doc = openapi_document(Settings())
    limited = doc["components"]["responses"]["RateLimited"]
    assert limited["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            public = operation.get("security") == [] and (method, path) not in limited_public
            documented = "429" in operation["responses"]
            assert documented != public, (
                f"{method.upper()} {path}: 429 documented={documented}, public={public}"
            )
            if documented:
                assert operation["responses"]["429"] == {"$ref": "#/components/responses/RateLimited"}
    for path in ("/api/v1/lines", "/api/v1/lines/{line_id}/corrections", "/api/v1/tokens"):
        assert "429" in doc["paths"][path]["post"]["responses"]
