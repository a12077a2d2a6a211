"""The newsroom API, driven over HTTP as editors would, against a real redis-server.

Every refusal must name what is wrong, and nothing of a refused request may
reach the desk stream or a ticker. Accepted actions must reach readers once.

What the service alone decides (authentication, authorisation, validation,
idempotency, sizes, the OpenAPI document) runs against the app in-process (the
`app` fixture: no worker, so nothing goes past the desk stream); what needs the
worker's fan-out, readers or a real socket runs against processes (`stack`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from flashwire.core.keys import Keys
from flashwire.service import account, audit
from flashwire.service.api import routes as line_routes
from flashwire.service.tokens import TokenStore
from tests.conftest import (
    InProcessApp,
    Reader,
    RedisBacked,
    ServiceNode,
    Stack,
    auth,
    eventually,
    metric,
    open_reader,
    post_line,
)

KEYS = Keys("fw")


async def stream_lengths(store: RedisBacked) -> dict[str, int]:
    """XLEN of the desk stream and of every ticker stream that exists, read straight from Redis."""
    redis = store.redis()
    try:
        lengths = {KEYS.desk: await redis.xlen(KEYS.desk)}
        async for key in redis.scan_iter(match=KEYS.ticker("*")):
            lengths[key.decode()] = await redis.xlen(key)
        return lengths
    finally:
        await redis.aclose()


async def assert_nothing_reached_the_streams(store: RedisBacked) -> None:
    """No desk entry, ticker event, line index entry or idempotency record exists."""
    lengths = await stream_lengths(store)
    assert lengths[KEYS.desk] == 0, lengths
    assert all(length == 0 for length in lengths.values()), lengths
    redis = store.redis()
    try:
        assert await redis.hlen(KEYS.line_index) == 0
        assert [key async for key in redis.scan_iter(match=f"{KEYS.tag}:idem:*")] == []
    finally:
        await redis.aclose()


def assert_error(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == status
    assert error["code"] and error["message"]
    if field is not None:
        assert error.get("field") == field, error
    return error


@pytest.fixture
async def node(stack: Stack) -> ServiceNode:
    """A worker and one service node on the test's Redis."""
    stack.worker()
    return stack.service()


@pytest.fixture
async def client(node: ServiceNode) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        yield http


def valid(**overrides: Any) -> dict[str, Any]:
    return {"edition": "en", "text": "Parliament dissolved; elections called for March.", **overrides}


# (case id, request kwargs for POST /api/v1/lines, expected field)
MALFORMED_POSTS: list[tuple[str, dict[str, Any], str]] = [
    ("not-json", {"content": b"edition=en&text=hello"}, "body"),
    ("empty-body", {"content": b""}, "body"),
    ("json-array", {"json": [valid()]}, "body"),
    ("json-string", {"json": "Parliament dissolved"}, "body"),
    ("missing-text", {"json": {"edition": "en"}}, "text"),
    ("missing-edition", {"json": {"text": "hello"}}, "edition"),
    ("unknown-edition", {"json": valid(edition="xx")}, "edition"),
    ("unknown-field", {"json": valid(colour="red")}, "colour"),
    ("text-not-string", {"json": valid(text=42)}, "text"),
    ("text-blank", {"json": valid(text=" \n\t ")}, "text"),
    ("text-too-long", {"json": valid(text="a" * 281)}, "text"),
    ("text-control-char", {"json": valid(text="Alarm\u0007 rings")}, "text"),
    ("urgency-not-string", {"json": valid(urgency=1)}, "urgency"),
    ("urgency-unknown", {"json": valid(urgency="breaking")}, "urgency"),
    ("topics-not-list", {"json": valid(topics="politics")}, "topics"),
    ("topic-unknown", {"json": valid(topics=["kittens"])}, "topics[0]"),
    ("topic-second-bad", {"json": valid(topics=["politics", "Europe"])}, "topics[1]"),
    ("url-not-string", {"json": valid(url=12)}, "url"),
    ("url-javascript", {"json": valid(url="javascript:alert(1)")}, "url"),
    ("url-no-host", {"json": valid(url="https:///path")}, "url"),
    ("expires-in-past", {"json": valid(expires_at="2020-01-01T00:00:00Z")}, "expires_at"),
    ("expires-not-a-time", {"json": valid(expires_at="tomorrow")}, "expires_at"),
    ("expires-without-offset", {"json": valid(expires_at="2999-01-01T00:00:00")}, "expires_at"),
    (
        "idempotency-key-invalid",
        {"json": valid(), "headers": {"Idempotency-Key": "has spaces in it"}},
        "Idempotency-Key",
    ),
]


def _with_auth(token: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "headers": {**auth(token), **kwargs.get("headers", {})}}


# -- authentication and authorisation ------------------------------------------


async def test_missing_token_is_401_naming_authorization_with_challenge(app: InProcessApp) -> None:
    """A post without a bearer token is refused 401, names Authorization and sends a Bearer challenge."""
    client = app.client
    for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer"}):
        response = await client.post("/api/v1/lines", json=valid(), headers=headers)
        assert_error(response, 401, "Authorization")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await assert_nothing_reached_the_streams(app)


async def test_garbage_and_revoked_tokens_are_401(app: InProcessApp) -> None:
    """Unknown, malformed and revoked tokens are refused 401; the token works until it is revoked."""
    client = app.client
    for presented in ("nonsense", "fwt_deadbeef_notthesecret", "fwt__", "fwt_x"):
        response = await client.post("/api/v1/lines", json=valid(), headers=auth(presented))
        assert_error(response, 401, "Authorization")
    real = await app.token()
    wrong_secret = real.rsplit("_", 1)[0] + "_" + "A" * 32
    assert_error(
        await client.post("/api/v1/lines", json=valid(), headers=auth(wrong_secret)), 401, "Authorization"
    )
    await assert_nothing_reached_the_streams(app)

    redis = app.redis()
    try:
        secret, record = await TokenStore(redis, KEYS).create(name="Rania", role="editor", editions=["en"])
        accepted = await client.post("/api/v1/lines", json=valid(), headers=auth(secret))
        assert accepted.status_code == 201, accepted.text
        assert await TokenStore(redis, KEYS).revoke(record.id)
        before = await redis.xlen(KEYS.desk)
        response = await client.post("/api/v1/lines", json=valid(), headers=auth(secret))
        assert_error(response, 401, "Authorization")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await redis.xlen(KEYS.desk) == before == 1
    finally:
        await redis.aclose()


async def test_token_for_another_edition_is_403(app: InProcessApp) -> None:
    """An English editor may not post to the Arabic edition, nor correct or read an Arabic line."""
    client = app.client
    en_editor = await app.token("editor", ["en"])
    ar_editor = await app.token("editor", ["ar"], name="Nour")
    response = await client.post(
        "/api/v1/lines", json=valid(edition="ar", text="عاجل"), headers=auth(en_editor)
    )
    assert_error(response, 403, None)
    # Even a malformed post to a foreign edition is refused as forbidden first.
    response = await client.post("/api/v1/lines", json={"edition": "ar", "text": 5}, headers=auth(en_editor))
    assert_error(response, 403, None)
    await assert_nothing_reached_the_streams(app)

    arabic = await post_line(client, ar_editor, "عاجل: انتخابات مبكرة", edition="ar")
    line_id = arabic["id"]
    correction = await client.post(
        f"/api/v1/lines/{line_id}/corrections", json={"text": "x"}, headers=auth(en_editor)
    )
    assert_error(correction, 403, None)
    assert_error(await client.get(f"/api/v1/lines/{line_id}", headers=auth(en_editor)), 403, None)
    assert_error(await client.get("/api/v1/editions/ar/lines", headers=auth(en_editor)), 403, None)
    assert (await stream_lengths(app))[KEYS.desk] == 1


async def test_editor_cannot_retract_but_chief_can(app: InProcessApp) -> None:
    """Retraction is reserved to chiefs: an editor gets 403 and nothing is written, a chief gets 201."""
    client = app.client
    editor = await app.token("editor", ["en"])
    chief = await app.token("chief", ["en"], name="Omar")
    line = await post_line(client, editor, "Minister resigns.")
    response = await client.post(
        f"/api/v1/lines/{line['id']}/retraction", json={"reason": "wrong"}, headers=auth(editor)
    )
    assert_error(response, 403, None)
    assert (await stream_lengths(app))[KEYS.desk] == 1

    response = await client.post(
        f"/api/v1/lines/{line['id']}/retraction", json={"reason": "unconfirmed"}, headers=auth(chief)
    )
    assert response.status_code == 201, response.text
    assert response.json()["action"] == "retract"
    assert response.json()["id"] == line["id"]
    # A retraction without a body is also fine.
    other = await post_line(client, chief, "Second line.")
    bare = await client.post(f"/api/v1/lines/{other['id']}/retraction", headers=auth(chief))
    assert bare.status_code == 201, bare.text
    assert (await stream_lengths(app))[KEYS.desk] == 4


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [pytest.param(kwargs, field, id=case) for case, kwargs, field in MALFORMED_POSTS],
)
async def test_malformed_post_is_422_naming_the_field(
    app: InProcessApp, request_kwargs: dict[str, Any], field: str
) -> None:
    """Each kind of malformed post is refused 422 naming the offending field, and nothing reaches Redis."""
    token = await app.token()
    response = await app.client.post("/api/v1/lines", **_with_auth(token, request_kwargs))
    assert_error(response, 422, field)
    await assert_nothing_reached_the_streams(app)


async def test_text_at_the_limit_is_accepted_and_whitespace_is_collapsed(app: InProcessApp) -> None:
    """Exactly 280 characters is accepted; surrounding and repeated whitespace does not count."""
    client = app.client
    token = await app.token()
    at_limit = "b" * 280
    accepted = await post_line(client, token, f"  {at_limit}\n")
    assert accepted["line"]["text"] == at_limit
    spaced = await post_line(client, token, "Ceasefire   agreed\n\tin  Gaza")
    assert spaced["line"]["text"] == "Ceasefire agreed in Gaza"


async def test_all_rejected_requests_leave_the_desk_empty(app: InProcessApp) -> None:
    """After many refusals no desk entry exists; a later valid post, even reusing the Idempotency-Key of a
    refused one, is accepted as new and is the only entry on the desk."""
    client = app.client
    editor = await app.token("editor", ["en"])
    key_headers = {"Idempotency-Key": "retry-me"}
    for _, kwargs, field in MALFORMED_POSTS:
        kwargs = {**kwargs, "headers": {**key_headers, **kwargs.get("headers", {})}}
        assert_error(await client.post("/api/v1/lines", **_with_auth(editor, kwargs)), 422, field)
    assert_error(await client.post("/api/v1/lines", json=valid()), 401, "Authorization")
    assert_error(
        await client.post("/api/v1/lines", json=valid(edition="ar"), headers=auth(editor)), 403, None
    )
    assert_error(
        await client.post("/api/v1/lines", content=b" " * 17_000 + b"{}", headers=auth(editor)), 413, "body"
    )
    assert_error(
        await client.post("/api/v1/lines/en-0000/corrections", json={"text": "x"}, headers=auth(editor)),
        404,
        "id",
    )
    await assert_nothing_reached_the_streams(app)

    response = await client.post("/api/v1/lines", json=valid(), headers={**auth(editor), **key_headers})
    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    assert await stream_lengths(app) == {KEYS.desk: 1}
    redis = app.redis()
    try:
        [(_, fields)] = await redis.xrange(KEYS.desk)
    finally:
        await redis.aclose()
    assert orjson.loads(fields[b"a"])["id"] == response.json()["id"]


async def test_follow_ups_on_unknown_lines_are_404_and_empty_correction_is_422(app: InProcessApp) -> None:
    """Correcting or retracting an unknown line is 404 naming id; a correction that changes nothing is 422."""
    client = app.client
    editor = await app.token("editor", ["en"])
    chief = await app.token("chief", ["en"], name="Omar")
    for line_id in ("en-00000000deadbeef", "NOT-A-VALID-ID", "x" * 100):
        response = await client.post(
            f"/api/v1/lines/{line_id}/corrections", json={"text": "Fixed."}, headers=auth(editor)
        )
        assert_error(response, 404, "id")
        response = await client.post(f"/api/v1/lines/{line_id}/retraction", json={}, headers=auth(chief))
        assert_error(response, 404, "id")
        assert_error(await client.get(f"/api/v1/lines/{line_id}", headers=auth(editor)), 404, "id")
    await assert_nothing_reached_the_streams(app)

    line = await post_line(client, editor, "Storm makes landfall.")
    url = f"/api/v1/lines/{line['id']}/corrections"
    assert_error(await client.post(url, json={}, headers=auth(editor)), 422, "body")
    assert_error(await client.post(url, headers=auth(editor)), 422, "body")
    assert_error(await client.post(url, json={"text": ""}, headers=auth(editor)), 422, "text")
    assert_error(await client.post(url, json={"status": "withheld"}, headers=auth(editor)), 422, "status")
    assert_error(
        await client.post(url, json={"url": "javascript:alert(1)"}, headers=auth(editor)), 422, "url"
    )
    retraction = f"/api/v1/lines/{line['id']}/retraction"
    assert_error(await client.post(retraction, json={"reason": 5}, headers=auth(chief)), 422, "reason")
    assert_error(await client.post(retraction, json=["x"], headers=auth(chief)), 422, "body")
    assert (await stream_lengths(app))[KEYS.desk] == 1


async def test_bodies_over_16_kib_are_413(app: InProcessApp) -> None:
    """A body over 16 KiB is refused 413, declared or chunked; exactly 16 KiB is accepted."""
    client = app.client
    token = await app.token()
    padded = orjson.dumps(valid())
    exact = padded[:-1] + b" " * (16 * 1024 - len(padded)) + b"}"
    assert len(exact) == 16 * 1024
    response = await client.post("/api/v1/lines", content=exact, headers=auth(token))
    assert response.status_code == 201, response.text

    too_big = padded[:-1] + b" " * (16 * 1024 + 1 - len(padded)) + b"}"
    assert_error(await client.post("/api/v1/lines", content=too_big, headers=auth(token)), 413, "body")

    async def chunks() -> AsyncIterator[bytes]:
        yield padded[:-1]
        for _ in range(20):
            yield b" " * 1024
        yield b"}"

    response = await client.post("/api/v1/lines", content=chunks(), headers=auth(token))
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body")
    assert (await stream_lengths(app))[KEYS.desk] == 1


# -- idempotency ---------------------------------------------------------------


async def test_retried_post_with_idempotency_key_yields_one_line(
    stack: Stack, node: ServiceNode, client: httpx.AsyncClient, readers: list[Reader]
) -> None:
    """A POST retried with one Idempotency-Key returns the first id, marked replayed; readers get one line."""
    token = await stack.token()
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")

    headers = {**auth(token), "Idempotency-Key": "desk-7f3a-0001"}
    body = valid(text="Earthquake of magnitude 6.8 strikes off the coast.")
    first = await client.post("/api/v1/lines", json=body, headers=headers)
    second = await client.post("/api/v1/lines", json=body, headers=headers)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["desk_id"] == first.json()["desk_id"]

    conflict = await client.post("/api/v1/lines", json=valid(text="Something else."), headers=headers)
    assert_error(conflict, 409, "Idempotency-Key")

    # A later, different line proves the reader saw nothing between the one line and it.
    sentinel = await post_line(client, token, "Sentinel line.")
    events = await reader.events(2)
    assert [(e["type"], e["line"]["id"]) for e in events] == [
        ("line", first.json()["id"]),
        ("line", sentinel["id"]),
    ]
    lengths = await stream_lengths(stack)
    assert lengths[KEYS.desk] == 2
    assert lengths[KEYS.ticker("en")] == 2


async def test_a_stored_answer_goes_only_to_its_token_and_refusals_keep_their_order(
    app: InProcessApp,
) -> None:
    """A post's stored answer is read beside its token (service/api.py `_arrival`), and given only
    once the token checks out: a retry under the same key with the token's id but a wrong secret,
    or after the token was revoked, is 401; without a valid token a bad body or a malformed key is
    still 401, and with one a bad body is 422 before a malformed key is."""
    client = app.client
    redis = app.redis()
    try:
        secret, record = await TokenStore(redis, KEYS).create(name="Rania", role="editor", editions=["en"])
        keyed = {**auth(secret), "Idempotency-Key": "desk-2b1c-0001"}
        first = await client.post("/api/v1/lines", json=valid(), headers=keyed)
        assert first.status_code == 201, first.text
        wrong_secret = {**keyed, **auth(f"fwt_{record.id}_{'A' * 32}")}
        assert_error(
            await client.post("/api/v1/lines", json=valid(), headers=wrong_secret), 401, "Authorization"
        )
        unknown = {**keyed, **auth("fwt_deadbeef_notthesecret")}
        assert_error(await client.post("/api/v1/lines", content=b"{", headers=unknown), 401, "Authorization")
        bad_key = {**unknown, "Idempotency-Key": "x" * 300}
        assert_error(await client.post("/api/v1/lines", json=valid(), headers=bad_key), 401, "Authorization")
        both_bad = {**keyed, "Idempotency-Key": "x" * 300}
        assert_error(await client.post("/api/v1/lines", content=b"{", headers=both_bad), 422, "body")
        assert_error(
            await client.post("/api/v1/lines", json=valid(), headers=both_bad), 422, "Idempotency-Key"
        )
        replay = await client.post("/api/v1/lines", json=valid(), headers=keyed)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert await TokenStore(redis, KEYS).revoke(record.id)
        assert_error(await client.post("/api/v1/lines", json=valid(), headers=keyed), 401, "Authorization")
        assert await redis.xlen(KEYS.desk) == 1
    finally:
        await redis.aclose()


async def test_concurrent_retries_with_one_idempotency_key_yield_one_line(app: InProcessApp) -> None:
    """Ten simultaneous copies of one keyed POST all answer with the same id; one desk entry is written."""
    client = app.client
    token = await app.token()
    headers = {**auth(token), "Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/lines", json=valid(), headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    assert (await stream_lengths(app))[KEYS.desk] == 1


async def test_a_retry_serialised_differently_is_still_a_retry(app: InProcessApp) -> None:
    """The same JSON re-sent with other spacing and key order (another client library's retry) gets the
    stored answer, for a post and for a follow-up action; a different value under the key is still 409."""
    client = app.client
    token = await app.token("chief")
    post_headers = {**auth(token), "Idempotency-Key": "reserialised-1", "Content-Type": "application/json"}
    compact = b'{"edition":"en","text":"Flood warning for the delta.","topics":["environment","africa"]}'
    spaced = (
        b'{\n  "topics": [ "environment", "africa" ],\n'
        b'  "text": "Flood warning for the delta.",\n  "edition": "en"\n}'
    )
    first = await client.post("/api/v1/lines", content=compact, headers=post_headers)
    again = await client.post("/api/v1/lines", content=spaced, headers=post_headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    reordered_topics = spaced.replace(b'"environment", "africa"', b'"africa", "environment"')
    assert_error(
        await client.post("/api/v1/lines", content=reordered_topics, headers=post_headers),
        409,
        "Idempotency-Key",
    )
    line_id = first.json()["id"]
    kill_headers = {**post_headers, "Idempotency-Key": "reserialised-kill"}
    killed = await client.post(
        f"/api/v1/lines/{line_id}/retraction", content=b'{"reason":"wrong"}', headers=kill_headers
    )
    retried = await client.post(
        f"/api/v1/lines/{line_id}/retraction", content=b'{ "reason" : "wrong" }', headers=kill_headers
    )
    assert killed.status_code == retried.status_code == 201, (killed.text, retried.text)
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert (await stream_lengths(app))[KEYS.desk] == 2


async def test_replayed_post_points_location_at_the_first_line(app: InProcessApp) -> None:
    """The Location header of a replayed POST names the line that was actually created."""
    client = app.client
    token = await app.token()
    headers = {**auth(token), "Idempotency-Key": "loc-1"}
    first = await client.post("/api/v1/lines", json=valid(), headers=headers)
    second = await client.post("/api/v1/lines", json=valid(), headers=headers)
    assert first.headers["Location"] == f"/api/v1/lines/{first.json()['id']}"
    assert second.headers["Location"] == first.headers["Location"]


# -- reading lines back --------------------------------------------------------


async def test_get_line_shows_current_version_and_history_after_correction(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """After a correction, GET /api/v1/lines/{id} shows version 2 and a history of both versions in order."""
    token = await stack.token()
    posted = await post_line(client, token, "Death toll rises to 12.", urgency="urgent", topics=["asia"])
    line_id = posted["id"]
    response = await client.post(
        f"/api/v1/lines/{line_id}/corrections", json={"text": "Death toll rises to 21."}, headers=auth(token)
    )
    assert response.status_code == 201, response.text
    assert response.json()["changes"] == {"text": "Death toll rises to 21."}

    async def corrected() -> dict[str, Any] | None:
        got = await client.get(f"/api/v1/lines/{line_id}", headers=auth(token))
        assert got.status_code == 200, got.text
        doc: dict[str, Any] = got.json()
        return doc if doc["line"] and doc["line"]["version"] == 2 else None

    doc = await eventually(corrected)
    assert doc["id"] == line_id
    assert doc["edition"] == "en"
    line = doc["line"]
    assert line["text"] == "Death toll rises to 21."
    assert line["urgency"] == "urgent"
    assert line["topics"] == ["asia"]
    assert line["status"] == "usable"
    assert [(v["version"], v["text"]) for v in doc["history"]] == [
        (1, "Death toll rises to 12."),
        (2, "Death toll rises to 21."),
    ]
    assert all(v["id"] == line_id for v in doc["history"])


async def test_live_lines_are_newest_first_and_drop_retracted(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """GET /api/v1/editions/en/lines lists live lines newest first, and a retracted line leaves the list."""
    editor = await stack.token("editor", ["en"])
    chief = await stack.token("chief", ["en"], name="Omar")
    ids = []
    for text in ("First.", "Second.", "Third."):
        ids.append((await post_line(client, editor, text))["id"])
        await asyncio.sleep(0.003)  # distinct publication milliseconds

    async def live_ids(expected: list[str]) -> list[str] | None:
        response = await client.get("/api/v1/editions/en/lines", headers=auth(editor))
        assert response.status_code == 200, response.text
        assert response.json()["edition"] == "en"
        found = [line["id"] for line in response.json()["lines"]]
        return found if found == expected else None

    await eventually(lambda: live_ids(list(reversed(ids))))
    response = await client.post(f"/api/v1/lines/{ids[1]}/retraction", headers=auth(chief))
    assert response.status_code == 201, response.text
    await eventually(lambda: live_ids([ids[2], ids[0]]))

    listing = (await client.get("/api/v1/editions/en/lines", headers=auth(editor))).json()
    assert listing["cursor"] != "0-0"
    everywhere = await stack.token("editor", ["*"])
    arabic = await client.get("/api/v1/editions/ar/lines", headers=auth(everywhere))
    assert arabic.json()["lines"] == []
    assert_error(await client.get("/api/v1/editions/xx/lines", headers=auth(editor)), 404, "edition")
    assert_error(await client.get("/api/v1/editions/en/lines"), 401, "Authorization")


# -- documents and operations --------------------------------------------------


async def test_openapi_document_lists_every_api_route(app: InProcessApp) -> None:
    """GET /api/v1/openapi.json is an OpenAPI 3.1 document with every route and method the API serves."""
    response = await app.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    served = {
        (route.path, method.lower())
        for route in [*line_routes, *audit.routes, *account.routes]
        for method in (route.methods or ())
        if method != "HEAD" and route.path != "/api/v1/openapi.json"  # the document need not describe itself
    }
    assert ("/api/v1/lines", "post") in served
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served <= documented, served - documented  # the document may describe more (health, feeds)
    for path, method in served:
        operation = doc["paths"][path][method]
        assert operation["responses"], (path, method)
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert "{" + parameter["name"] + "}" in path
    # Every $ref resolves inside the document.
    refs = [part.split('"')[0] for part in orjson.dumps(doc).decode().split('"$ref":"')[1:]]
    for ref in refs:
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]


async def test_healthz_and_metrics(
    node: ServiceNode, client: httpx.AsyncClient, readers: list[Reader]
) -> None:
    """/healthz answers 200 ok and /metrics is Prometheus text whose flashwire_connections counts readers."""
    for _ in range(100):  # "ok" needs the worker's first heartbeat, which may trail the node's start
        health = await client.get("/healthz")
        if health.status_code == 200 and health.json()["status"] == "ok":
            break
        await asyncio.sleep(0.1)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE flashwire_connections gauge" in metrics.text
    assert metric(metrics.text, "flashwire_connections") == 0
    readers.append(await open_reader(node.ws_url, "editions=en"))
    await readers[-1].next_of("snapshot")
    assert metric((await client.get("/metrics")).text, "flashwire_connections") == 1


async def test_a_client_that_leaves_mid_body_leaves_no_traceback(stack: Stack, node: ServiceNode) -> None:
    """A POST whose client drops the connection halfway through its body (a phone losing signal) writes
    nothing and logs no traceback; the node goes on answering."""
    token = await stack.token()
    _, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        (
            f"POST /api/v1/lines HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
            '{"edition": "en", "text": "half a'
        ).encode()
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert (await stream_lengths(stack))[KEYS.desk] == 0
    assert "Traceback" not in node.log()
