"""Optimistic concurrency on every change to a line (issue 11, finding 11): ETag and If-Match.

Two editors correcting one line at once must not both be accepted, the later silently replacing the
earlier. Against real processes (`stack`): the line's revision is its ETag, and If-Match is checked in
the script that accepts the change into the desk stream (service/desk.py), so it holds however the
requests race; the worker's applied line keeps the same count (workers/apply.py). The desk page sends
If-Match with every change and shows the server's 412 (checked in Chromium).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from playwright.async_api import Page, Request, expect
from redis.asyncio import Redis
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.keys import Keys
from flashwire.core.models import ActionAccepted, PinAction
from flashwire.core.settings import Settings
from flashwire.dev.redis_server import RedisProcess
from flashwire.service.desk import Accepted, Desk, StaleRevision
from flashwire.service.openapi import openapi_document
from tests.browser import browser, sign_in_desk
from tests.conftest import Reader, ServiceNode, Stack, auth, open_reader, post_line


async def _change(
    client: httpx.AsyncClient,
    token: str,
    line_id: str,
    action: str,
    body: Any = None,
    *,
    if_match: str | None = None,
    key: str | None = None,
) -> httpx.Response:
    headers = auth(token)
    if if_match is not None:
        headers["If-Match"] = if_match
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(f"/api/v1/lines/{line_id}/{action}", json=body, headers=headers)


async def _etag(client: httpx.AsyncClient, token: str, line_id: str) -> tuple[str, dict[str, Any]]:
    """The ETag of GET /api/v1/lines/{id} and the line it describes."""
    response = await client.get(f"/api/v1/lines/{line_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    line: dict[str, Any] = response.json()["line"]
    return response.headers["etag"], line


CHANGES = ("corrections", "retraction", "pin", "unpin", "expiry", "cancellation")
DOCUMENT = openapi_document(Settings())


def _documented_412_errors(body: dict[str, Any]) -> list[str]:
    """What the OpenAPI document's 412 response schema finds wrong with `body`."""
    response = DOCUMENT["components"]["responses"]["PreconditionFailed"]
    schema = response["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(DOCUMENT))
    validator = Draft202012Validator({"$ref": f"urn:openapi{schema['$ref']}"}, registry=registry)
    return [error.message for error in validator.iter_errors(body)]


def test_the_openapi_document_has_if_match_and_412_on_every_change_and_the_etag_on_get() -> None:
    """Each change to a line takes an optional If-Match header and answers 412 with its own body;
    GET /api/v1/lines/{line_id} documents its ETag."""
    paths = DOCUMENT["paths"]
    for change in CHANGES:
        operation = paths[f"/api/v1/lines/{{line_id}}/{change}"]["post"]
        [if_match] = [p for p in operation["parameters"] if p["name"] == "If-Match"]
        assert if_match["in"] == "header" and if_match["required"] is False
        assert operation["responses"]["412"] == {"$ref": "#/components/responses/PreconditionFailed"}
    assert "If-Match" not in {p["name"] for p in paths["/api/v1/lines"]["post"]["parameters"]}
    assert "ETag" in paths["/api/v1/lines/{line_id}"]["get"]["responses"]["200"]["headers"]


def _assert_412(response: httpx.Response, revision: int) -> dict[str, Any]:
    """A 412 naming If-Match, with the current revision, its ETag and the line, as documented."""
    assert response.status_code == 412, response.text
    body: dict[str, Any] = response.json()
    assert _documented_412_errors(body) == []
    assert body["error"]["code"] == "precondition_failed"
    assert body["error"]["field"] == "If-Match"
    assert f"revision {revision}" in body["error"]["message"]
    assert body["revision"] == revision and body["etag"] == f'"v{revision}"'
    assert body["line"] is not None
    return body


async def _next_line_events(reader: Reader, count: int) -> list[tuple[str, str | None, str]]:
    """(type, change, text) of the reader's next `count` line events."""
    events = await reader.events(count)
    return [(event["type"], event.get("change"), event["line"]["text"]) for event in events]


async def test_the_desk_script_accepts_one_of_two_changes_made_against_the_same_revision(
    redis_server: RedisProcess,
) -> None:
    """service/desk.py on its own, against real Redis: two pins sent at once with If-Match "v1" (as
    two nodes would) both reach the script; the check and the append are one step, so one is
    accepted with revision 2 on its desk entry, the other is StaleRevision(2), and the desk holds
    one entry. A replay of the accepted Idempotency-Key answers as before, its If-Match stale or not."""
    redis = Redis.from_url(redis_server.url)
    try:
        keys = Keys("fw")
        desk = Desk(redis, keys, maxlen=1000, idempotency_ttl_s=60)
        await redis.hset(keys.line_index, "en-0123456789abcdef", "en")  # posted before revisions
        assert await desk.revision("en-0123456789abcdef") == 1

        async def pin(key: str) -> Accepted | StaleRevision:
            action = PinAction(action="pin", id="en-0123456789abcdef", edition="en", at=now_ms())
            answer = ActionAccepted(
                action="pin", id=action.id, edition="en", accepted_at=iso_from_ms(action.at)
            )
            try:
                return await desk.submit(action, answer, idempotency=("t", key, "f"), if_match=frozenset({1}))
            except StaleRevision as stale:
                return stale

        results = await asyncio.gather(pin("a"), pin("b"))
        accepted = [result for result in results if isinstance(result, Accepted)]
        refused = [result for result in results if isinstance(result, StaleRevision)]
        assert len(accepted) == 1 and len(refused) == 1 and refused[0].revision == 2
        [(_, fields)] = await redis.xrange(keys.desk)
        assert fields[b"r"] == b"2" and await desk.revision("en-0123456789abcdef") == 2
        winner = "a" if results[0] is accepted[0] else "b"
        replay = await pin(winner)
        assert isinstance(replay, Accepted) and replay.replayed and replay.body == accepted[0].body
        assert await redis.xlen(keys.desk) == 1
    finally:
        await redis.aclose()


async def test_two_corrections_with_the_same_if_match_at_once_only_one_is_accepted(
    stack: Stack, readers: list[Reader]
) -> None:
    """The finding: one editor changes "6.8" to "7.1", another "Chile" to "Peru", both from revision 1,
    at the same moment (here ten at once). Exactly one is accepted (201); every other is 412 naming
    If-Match with revision 2; readers get the accepted correction and no other."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"], name="Eddie")
    other = await stack.token("editor", ["en"], name="Olga")
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, editor, "Magnitude 6.8 earthquake strikes off the coast of Chile")
        await stack.until_applied()
        etag, shown = await _etag(client, editor, line["id"])
        assert etag == '"v1"' and shown["revision"] == 1 and shown["version"] == 1
        texts = [
            "Magnitude 7.1 earthquake strikes off the coast of Chile",
            "Magnitude 6.8 earthquake strikes off the coast of Peru",
            *(f"Magnitude 6.{n} earthquake strikes off the coast of Chile" for n in range(8)),
        ]
        answers = await asyncio.gather(
            *(
                _change(client, token, line["id"], "corrections", {"text": text}, if_match=etag)
                for token, text in zip([editor, other] * 5, texts, strict=True)
            )
        )
        accepted = [text for text, answer in zip(texts, answers, strict=True) if answer.status_code == 201]
        assert len(accepted) == 1, [answer.text for answer in answers]
        for answer in answers:
            if answer.status_code != 201:
                _assert_412(answer, 2)
        await stack.until_applied()
        etag, shown = await _etag(client, editor, line["id"])
        assert etag == '"v2"' and shown["revision"] == 2 and shown["text"] == accepted[0]
        # Readers: the post, the one correction, then whatever comes next (no second correction).
        await post_line(client, editor, "Tsunami warning issued")
        events = await _next_line_events(reader, 3)
        assert events == [
            ("line", None, "Magnitude 6.8 earthquake strikes off the coast of Chile"),
            ("update", "correction", accepted[0]),
            ("line", None, "Tsunami warning issued"),
        ]


async def test_every_change_moves_the_revision_and_a_stale_if_match_is_refused(stack: Stack) -> None:
    """A pin (which leaves `version` alone) still makes revision 1 stale: a correction, an expiry change
    or a retraction sent with it is 412 with the pinned line, and each succeeds with the current ETag;
    a scheduled line's correction makes a cancellation made against revision 1 stale."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, chief, "Parliament dissolved")
        await stack.until_applied()
        assert (await _change(client, chief, line["id"], "pin", if_match='"v1"')).status_code == 201
        await stack.until_applied()
        etag, shown = await _etag(client, chief, line["id"])
        assert etag == '"v2"' and shown["revision"] == 2 and shown["version"] == 1 and shown["pinned"]
        fix = {"text": "Parliament dissolved early"}
        stale = await _change(client, chief, line["id"], "corrections", fix, if_match='"v1"')
        assert _assert_412(stale, 2)["line"]["pinned"] is True
        later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
        _assert_412(
            await _change(client, chief, line["id"], "expiry", {"expires_at": later}, if_match='"v1"'), 2
        )
        _assert_412(await _change(client, chief, line["id"], "retraction", if_match='"v1"'), 2)
        _assert_412(await _change(client, chief, line["id"], "unpin", if_match='"v1"'), 2)
        assert (
            await _change(client, chief, line["id"], "expiry", {"expires_at": later}, if_match=etag)
        ).status_code == 201
        # The answer counts a change accepted but not yet applied: "v2" is stale at once.
        _assert_412(await _change(client, chief, line["id"], "unpin", if_match='"v2"'), 3)
        await stack.until_applied()
        etag, _ = await _etag(client, chief, line["id"])
        assert etag == '"v3"'
        assert (await _change(client, chief, line["id"], "retraction", if_match=etag)).status_code == 201
        await stack.until_applied()
        etag, shown = await _etag(client, chief, line["id"])
        assert etag == '"v4"' and shown["status"] == "canceled" and shown["version"] == 2

        embargo = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        scheduled = await post_line(client, chief, "Budget figures", embargo_until=embargo)
        await stack.until_applied()
        quiet = {"text": "Budget: figures"}
        fix_response = await _change(client, chief, scheduled["id"], "corrections", quiet, if_match='"v1"')
        assert fix_response.status_code == 201
        _assert_412(await _change(client, chief, scheduled["id"], "cancellation", if_match='"v1"'), 2)
        assert (
            await _change(client, chief, scheduled["id"], "cancellation", if_match='"v2"')
        ).status_code == 201


async def test_without_if_match_or_with_star_the_change_is_made_and_a_replay_answers_as_before(
    stack: Stack,
) -> None:
    """No If-Match (scripts, the CLI) and `If-Match: *` make the change whatever the revision; a retry
    of an accepted request with its Idempotency-Key gets its first 201, although its If-Match is stale
    by then; a weak or foreign tag never matches (412) and a malformed header is 422 naming If-Match."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"], name="Eddie")
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, editor, "Storm warning")
        await stack.until_applied()
        first = await _change(client, editor, line["id"], "corrections", {"text": "Storm warning: coast"})
        assert first.status_code == 201, first.text
        star = await _change(
            client, editor, line["id"], "corrections", {"text": "Storm warning: north"}, if_match="*"
        )
        assert star.status_code == 201, star.text
        await stack.until_applied()
        etag, _ = await _etag(client, editor, line["id"])
        assert etag == '"v3"'
        body = {"text": "Storm warning: north coast"}
        accepted = await _change(
            client, editor, line["id"], "corrections", body, if_match=f'"v9", {etag}', key="k-1"
        )
        assert accepted.status_code == 201, accepted.text
        replay = await _change(client, editor, line["id"], "corrections", body, if_match=etag, key="k-1")
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == accepted.json()
        for foreign in ['W/"v4"', '"abc"', '"v04"']:
            _assert_412(await _change(client, editor, line["id"], "corrections", body, if_match=foreign), 4)
        for malformed in ["v4", "", '"v4', '*, "v4"']:
            bad = await _change(client, editor, line["id"], "corrections", body, if_match=malformed)
            assert bad.status_code == 422, (malformed, bad.text)
            assert bad.json()["error"]["field"] == "If-Match"
        await stack.until_applied()
        etag, shown = await _etag(client, editor, line["id"])
        assert etag == '"v4"' and shown["text"] == "Storm warning: north coast"


async def test_an_accepted_change_that_changes_nothing_still_moves_the_applied_revision(stack: Stack) -> None:
    """Two pins accepted before the worker applies anything: the second changes nothing, yet the applied
    line takes its revision, so the ETag a client reads is the one If-Match is checked against."""
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, chief, "Markets closed early")
        for _ in range(2):
            assert (await _change(client, chief, line["id"], "pin")).status_code == 201
        stack.worker()
        await stack.until_applied()
        etag, shown = await _etag(client, chief, line["id"])
        assert etag == '"v3"' and shown["revision"] == 3 and shown["pinned"]
        fix = await _change(
            client, chief, line["id"], "corrections", {"text": "Markets close early"}, if_match=etag
        )
        assert fix.status_code == 201, fix.text


async def _sign_in(page: Page, node: ServiceNode, token: str) -> None:
    await sign_in_desk(page, node.url, token)


@pytest.mark.slow
async def test_the_desk_sends_if_match_and_shows_the_servers_412(stack: Stack) -> None:
    """In Chromium: the desk pins with the revision it shows; an editor who opened a correction
    before another editor's correction was accepted gets the conflict panel (revision 3), and the
    line is unchanged."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    other = await stack.token("editor", ["en"], name="Olga")
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, chief, "Volcano erupts near the capital")
        await stack.until_applied()
        async with browser() as chromium:
            desk = await chromium.new_page()
            sent: list[tuple[str, str | None]] = []

            def record(request: Request) -> None:
                if request.method == "POST" and "/api/v1/lines/" in request.url:
                    sent.append((request.url.rsplit("/", 1)[1], request.headers.get("if-match")))

            desk.on("request", record)
            await _sign_in(desk, node, chief)
            await desk.get_by_role("button", name=re.compile("^Pin “Volcano")).click()
            await expect(desk.get_by_role("button", name=re.compile("^Unpin “Volcano"))).to_be_visible()
            await desk.get_by_role("button", name=re.compile("^Correct “Volcano")).click()
            await desk.get_by_label("Corrected text").fill("Volcano erupts near the capital, flights halted")
            # Meanwhile another editor corrects the line.
            their_fix = {"text": "Volcano erupts; city evacuated"}
            theirs = await _change(client, other, line["id"], "corrections", their_fix, if_match='"v2"')
            assert theirs.status_code == 201, theirs.text
            await desk.get_by_role("button", name="Publish correction").click()
            panel = desk.locator(".desk-line [role=alert].conflict")
            await expect(panel).to_contain_text("Someone else changed this line while you were editing it")
            await expect(panel).to_contain_text("revision 3")
            await expect(panel).to_contain_text("Your edits and theirs overlap")
            assert sent == [("pin", '"v1"'), ("corrections", '"v2"')]
        await stack.until_applied()
        _, shown = await _etag(client, chief, line["id"])
        assert shown["text"] == "Volcano erupts; city evacuated"
