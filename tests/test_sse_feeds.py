"""SSE with Last-Event-ID resume, the three feed formats with conditional requests, and embedding rules."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree as ET

import feedparser
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from flashwire.dev.redis_server import RedisProcess
from tests.conftest import Reader, Stack, auth, eventually, post_line, serve_in_process


class SseReader:
    """Reads server-sent events from a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.last_id: str | None = None

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        data: list[str] = []
        while True:
            line = await asyncio.wait_for(self.lines.__anext__(), timeout_s)
            if line == "":
                if data:
                    message: dict[str, Any] = orjson.loads("\n".join(data))
                    return message
                continue
            field, _, value = line.partition(": ")
            if field == "id":
                self.last_id = value
            elif field == "data":
                data.append(value)

    async def next_of(self, *types: str) -> dict[str, Any]:
        while True:
            message = await self.next()
            if message["type"] in types:
                return message


async def test_sse_delivers_the_protocol_and_resumes_with_last_event_id(stack: Stack) -> None:
    """/sse sends what /ws sends; reconnecting with Last-Event-ID yields exactly the missed events."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "ar"])
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        async with client.stream("GET", "/sse", params={"editions": "en,ar"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = SseReader(response)
            assert (await sse.next())["type"] == "hello"
            assert (await sse.next())["type"] == "subscribed"
            assert (await sse.next_of("snapshot"))["edition"] == "en"
            assert (await sse.next_of("snapshot"))["edition"] == "ar"
            await post_line(client, editor, "first")
            await post_line(client, editor, "أول", edition="ar")
            got = [await sse.next_of("line"), await sse.next_of("line")]
            assert [m["line"]["text"] for m in got] == ["first", "أول"]
            last_id = sse.last_id
            assert last_id is not None and last_id.startswith("ar:") and ",en:" in last_id
        missed = [
            await post_line(client, editor, f"missed {i}", edition="en" if i % 2 else "ar") for i in range(6)
        ]
        async with client.stream(
            "GET", "/sse", params={"editions": "en,ar"}, headers={"Last-Event-ID": last_id}
        ) as response:
            sse = SseReader(response)
            await sse.next_of("subscribed")
            events = [await sse.next_of("line", "snapshot") for _ in range(6)]
            assert all(e["type"] == "line" for e in events)
            by_edition = {e: [m["line"]["id"] for m in events if m["edition"] == e] for e in ("en", "ar")}
            assert by_edition["en"] == [m["id"] for m in missed if m["edition"] == "en"]
            assert by_edition["ar"] == [m["id"] for m in missed if m["edition"] == "ar"]
            await post_line(client, editor, "live again")
            assert (await sse.next_of("line"))["line"]["text"] == "live again"
        bad = await client.get("/sse", params={"editions": "en", "min_urgency": "loud"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "min_urgency"


async def test_feeds_validate_carry_language_and_answer_304(stack: Stack) -> None:
    """JSON Feed, RSS and Atom of an edition parse, carry language and direction, show tombstones for
    killed lines, and answer conditional requests with 304 until something changes."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        kept = await post_line(
            client, chief, "هدنة في غزة", edition="ar", topics=["palestine"], url="https://example.com/a"
        )
        killed = await post_line(client, chief, "خبر خاطئ", edition="ar")
        await post_line(client, chief, "Markets open higher", source="Reuters")
        await stack.until_applied()
        await client.post(f"/api/v1/lines/{killed['id']}/retraction", headers=auth(chief))
        await stack.until_applied()

        document = (await client.get("/feeds/ar.json")).json()
        assert document["version"] == "https://jsonfeed.org/version/1.1"
        assert document["language"] == "ar" and document["_flashwire"]["direction"] == "rtl"
        assert document["feed_url"].endswith("/feeds/ar.json")
        # The killed line stays for a day as a withdrawn item, after the live ones (test_feeds_semantics.py).
        [item, withdrawn] = document["items"]
        assert withdrawn["id"] == f"urn:flashwire:line:{killed['id']}"
        assert withdrawn["_flashwire"]["retracted"] is True
        assert item["id"] == f"urn:flashwire:line:{kept['id']}" and item["content_text"] == "هدنة في غزة"
        assert item["url"] == "https://example.com/a" and item["tags"] == ["palestine"]
        assert item["_flashwire"]["direction"] == "rtl"

        rss_response = await client.get("/feeds/ar.rss")
        rss = feedparser.parse(rss_response.content)
        assert not rss.bozo, rss.bozo_exception
        assert rss.feed.language == "ar"
        assert [e.title for e in rss.entries] == ["هدنة في غزة", "خبر مسحوب"]  # the kill: withdrawn

        atom_response = await client.get("/feeds/ar.atom")
        atom = feedparser.parse(atom_response.content)
        assert not atom.bozo, atom.bozo_exception
        assert [e.title for e in atom.entries] == ["هدنة في غزة"]
        root = ET.fromstring(atom_response.content)
        assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "ar"
        assert root.find(".//{http://www.w3.org/1999/xhtml}div").get("dir") == "rtl"  # type: ignore[union-attr]
        tombstones = root.findall("{http://purl.org/atompub/tombstones/1.0}deleted-entry")
        assert [t.get("ref") for t in tombstones] == [f"urn:flashwire:line:{killed['id']}"]

        await post_line(client, chief, "<b>Markup</b> stays text")
        await stack.until_applied()
        rss_raw = (await client.get("/feeds/en.rss")).text
        # Entity-encoded twice: an aggregator decoding the description as HTML shows the brackets.
        assert "<description>&amp;lt;b&amp;gt;Markup&amp;lt;/b&amp;gt; stays text</description>" in rss_raw
        english = feedparser.parse((await client.get("/feeds/en.atom")).content)
        assert not english.bozo and english.entries[-1].author == "Reuters"

        etags = {}
        for form in ("json", "rss", "atom"):
            first = await client.get(f"/feeds/ar.{form}")
            etag, modified = first.headers["etag"], first.headers["last-modified"]
            assert (await client.get(f"/feeds/ar.{form}", headers={"If-None-Match": etag})).status_code == 304
            assert (
                await client.get(f"/feeds/ar.{form}", headers={"If-Modified-Since": modified})
            ).status_code == 304
            etags[form] = etag
        await post_line(client, chief, "خبر جديد", edition="ar")

        async def json_feed_changed() -> httpx.Response | None:
            response = await client.get("/feeds/ar.json", headers={"If-None-Match": etags["json"]})
            return response if response.status_code != 304 else None

        # The node serves the new line once it has read it from the ticker: milliseconds.
        changed = await eventually(json_feed_changed)
        assert changed.status_code == 200 and changed.headers["etag"] != etags["json"]
        assert changed.json()["items"][0]["content_text"] == "خبر جديد"  # newest first
        assert (await client.get("/feeds/xx.json")).status_code == 404
        assert (await client.get("/feeds/ar.html")).status_code == 404


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_embedding_origins_are_enforced(stack: Stack, readers: list[Reader], transport: str) -> None:
    """Only configured origins (and the service's own pages, and non-browser clients) may open the live
    ticker (a WebSocket, an endless SSE stream: real sockets, so a service process)."""
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS="https://partner.example")
    partner, evil = {"Origin": "https://partner.example"}, {"Origin": "https://evil.example"}
    own = {"Origin": node.url}
    if transport == "ws":
        for headers in (partner, own, {}):
            async with connect(node.ws_url + "?editions=en", additional_headers=headers) as ws:
                assert orjson.loads(await ws.recv())["type"] == "hello"
        reader = Reader(await connect(node.ws_url + "?editions=en", additional_headers=evil))
        assert await reader.until_closed() == 4403
        assert "origin not allowed" in (reader.close_reason or "")
        return
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        async with client.stream("GET", "/sse?editions=en", headers=partner) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "https://partner.example"
        async with client.stream("GET", "/sse?editions=en", headers=evil) as response:
            assert response.status_code == 403
            assert "access-control-allow-origin" not in response.headers


async def test_feeds_are_embeddable_by_allowed_origins_only(redis_server: RedisProcess) -> None:
    """A feed is served with CORS headers to an allowed partner page, and refused 403 without them to any
    other origin (in-process: the service alone decides)."""
    async with serve_in_process(redis_server, FLASHWIRE_ALLOWED_ORIGINS="https://partner.example") as app:
        allowed = await app.client.get("/feeds/en.json", headers={"Origin": "https://partner.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://partner.example"
        refused = await app.client.get("/feeds/en.json", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        assert (await app.client.get("/feeds/en.json")).status_code == 200  # no Origin: not a browser


async def test_refusals_of_sse_and_feeds_are_readable_by_an_allowed_partner_page(
    redis_server: RedisProcess,
) -> None:
    """An allowed partner page can read why /sse or a feed refused it (CORS headers on the 400, 404 and
    503, with Retry-After exposed); a disallowed one still gets no CORS headers. In-process, against a
    private redis-server that the test kills."""
    partner, evil = {"Origin": "https://partner.example"}, {"Origin": "https://evil.example"}
    async with serve_in_process(redis_server, FLASHWIRE_ALLOWED_ORIGINS="https://partner.example") as app:
        client = app.client
        for path, status in (("/sse?editions=fr", 400), ("/feeds/xx.json", 404)):
            refused = await client.get(path, headers=partner)
            assert refused.status_code == status
            assert refused.headers["access-control-allow-origin"] == "https://partner.example"
            assert "access-control-allow-origin" not in (await client.get(path, headers=evil)).headers
        redis_server.kill()
        for path in ("/sse?editions=en", "/feeds/en.json"):

            async def unavailable(path: str = path) -> httpx.Response | None:
                response = await client.get(path, headers=partner)
                return response if response.status_code == 503 else None

            refused = await eventually(unavailable)
            assert refused.headers["access-control-allow-origin"] == "https://partner.example"
            assert "Retry-After" in refused.headers["access-control-expose-headers"]
            assert "retry-after" in refused.headers
