"""The feeds say what they mean (docs/feeds.md, "What each format says"): every item carries its
line's urgency in the format's own terms, a killed line is withdrawn under its own id in every
format for the window and then gone, and a correction changes an item in place. Against a real
node and worker; the documents are read with a real feed parser (feedparser) and JSON Feed's
rules, and stay valid."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from xml.etree import ElementTree as ET

import feedparser
import httpx
import orjson

from flashwire.service.feeds import TOMBSTONE_WINDOW_MS
from tests.conftest import Stack, auth, eventually, post_line

URGENCY = "urn:flashwire:urgency"
TOPIC = "urn:flashwire:topic"
STATUS = "urn:flashwire:status"
ATOM = "{http://www.w3.org/2005/Atom}"
AT = "{http://purl.org/atompub/tombstones/1.0}"


def urn(line: dict[str, Any]) -> str:
    return f"urn:flashwire:line:{line['id']}"


def check_json_feed(document: dict[str, Any]) -> None:
    """The MUSTs of JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/; the tests have no JSON
    Schema of it): version, title and items; each item an `id` string, unique, with `content_text`
    or `content_html`; strings where the spec says strings; extensions are keys starting with `_`
    whose values are objects."""
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(document["title"], str) and isinstance(document["items"], list)
    ids = [item["id"] for item in document["items"]]
    assert all(isinstance(i, str) and i for i in ids) and len(ids) == len(set(ids))
    known = {"id", "url", "title", "content_text", "content_html", "date_published", "date_modified",
             "language", "tags", "authors"}  # fmt: skip
    for item in document["items"]:
        assert isinstance(item.get("content_text") or item.get("content_html"), str)
        assert all(isinstance(tag, str) for tag in item.get("tags", []))
        for key, value in item.items():
            assert key in known or (key.startswith("_") and isinstance(value, dict)), key


class Feeds:
    """The three feeds of one edition, as a partner reads them."""

    def __init__(self, responses: dict[str, httpx.Response]) -> None:
        self.responses = responses
        self.json: dict[str, Any] = orjson.loads(responses["json"].content)
        self.rss = feedparser.parse(responses["rss"].content)
        self.atom = feedparser.parse(responses["atom"].content)
        self.atom_root = ET.fromstring(responses["atom"].content)
        check_json_feed(self.json)
        for parsed in (self.rss, self.atom):
            assert not parsed.bozo, parsed.bozo_exception

    @classmethod
    async def read(cls, client: httpx.AsyncClient, edition: str) -> Feeds:
        responses = {form: await client.get(f"/feeds/{edition}.{form}") for form in ("json", "rss", "atom")}
        assert all(r.status_code == 200 for r in responses.values())
        return cls(responses)

    def json_item(self, line: dict[str, Any]) -> dict[str, Any]:
        items: list[dict[str, Any]] = [i for i in self.json["items"] if i["id"] == urn(line)]
        [item] = items
        return item

    def rss_item(self, line: dict[str, Any]) -> Any:
        [entry] = [e for e in self.rss.entries if e.id == urn(line)]
        return entry

    def atom_entry(self, line: dict[str, Any]) -> Any:
        [entry] = [e for e in self.atom.entries if e.id == urn(line)]
        return entry

    def tombstones(self) -> list[ET.Element]:
        return self.atom_root.findall(f"{AT}deleted-entry")


def categories(entry: Any, scheme: str) -> list[tuple[str, str | None]]:
    """An RSS item's or Atom entry's categories of one scheme, as (term, label)."""
    return [(tag.term, tag.get("label")) for tag in entry.get("tags", []) if tag.scheme == scheme]


async def changed(client: httpx.AsyncClient, edition: str, etag: str) -> Feeds:
    """The edition's feeds once the node serves a JSON Feed other than `etag` (it has read the
    ticker: milliseconds after the worker applied the change)."""

    async def probe() -> bool:
        response = await client.get(f"/feeds/{edition}.json", headers={"If-None-Match": etag})
        return response.status_code == 200

    await eventually(probe)
    return await Feeds.read(client, edition)


async def test_every_format_carries_the_urgency_of_each_line(stack: Stack) -> None:
    """Flash, urgent and routine lines, English and Arabic: RSS has a category of the urgency scheme,
    Atom one with a label in the edition's language, JSON Feed `_flashwire.urgency` with
    `urgency_label`; topics stay apart (their own scheme; JSON Feed `tags` hold topics only)."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"])
    expected = {
        "en": [("Quake hits coast", "flash", "Flash"), ("Polls close", "urgent", "Urgent"),
               ("Markets steady", "routine", "Routine")],
        "ar": [("زلزال يضرب الساحل", "flash", "عاجل جدًا"), ("إغلاق مراكز الاقتراع", "urgent", "عاجل")],
    }  # fmt: skip
    async with httpx.AsyncClient(base_url=node.url) as client:
        posted = {
            edition: [
                await post_line(client, chief, text, edition=edition, urgency=urgency, topics=["politics"])
                for text, urgency, _ in rows
            ]
            for edition, rows in expected.items()
        }
        await stack.until_applied()
        for edition, rows in expected.items():
            feeds = await eventually(partial(_with_items, client, edition, len(rows)))
            for line, (_, urgency, label) in zip(posted[edition], rows, strict=True):
                item = feeds.json_item(line)
                assert item["_flashwire"]["urgency"] == urgency
                assert item["_flashwire"]["urgency_label"] == label
                assert item["tags"] == ["politics"]
                rss = feeds.rss_item(line)
                assert categories(rss, URGENCY) == [(urgency, None)]
                assert categories(rss, TOPIC) == [("politics", None)]
                atom = feeds.atom_entry(line)
                assert categories(atom, URGENCY) == [(urgency, label)]
                assert categories(atom, TOPIC) == [("politics", None)]


async def _with_items(client: httpx.AsyncClient, edition: str, count: int) -> Feeds | None:
    feeds = await Feeds.read(client, edition)
    return feeds if len(feeds.json["items"]) == count else None


async def test_a_kill_is_withdrawn_in_every_format_for_the_window_then_gone(stack: Stack) -> None:
    """A killed line stays a day under its own id, saying it was withdrawn and never repeating the
    killed text: JSON Feed and RSS keep the item with a "Withdrawn" title (JSON `_flashwire.retracted`,
    RSS category `withdrawn`), Atom has an RFC 6721 tombstone instead of the entry; each feed's ETag
    changes. Then the kill is aged past TOMBSTONE_WINDOW_MS in Redis (its score in the killed set,
    the record the feeds read the window from, as if the day had passed: nothing in the node is
    patched) and it leaves all three, with a new ETag and a later Last-Modified."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    false_text = "Minister resigns over leaked memo"
    async with httpx.AsyncClient(base_url=node.url) as client:
        kept = await post_line(client, chief, "Parliament sits late", topics=["politics"])
        killed = await post_line(
            client, chief, false_text, urgency="flash", topics=["politics"],
            url="https://news.example/memo", source="Agency",
        )  # fmt: skip
        await stack.until_applied()
        before = await eventually(lambda: _with_items(client, "en", 2))
        retraction = await client.post(
            f"/api/v1/lines/{killed['id']}/retraction", json={"reason": "Unconfirmed"}, headers=auth(chief)
        )
        assert retraction.status_code in (200, 201, 202), retraction.text
        await stack.until_applied()
        during = await changed(client, "en", before.responses["json"].headers["etag"])

        for form, response in during.responses.items():
            assert false_text not in response.text, form  # the killed headline does not spread further
            assert response.headers["etag"] != before.responses[form].headers["etag"], form
            again = await client.get(f"/feeds/en.{form}", headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304, form
        assert [i["id"] for i in during.json["items"]] == [urn(kept), urn(killed)]
        item = during.json_item(killed)
        assert (item["title"], item["content_text"]) == (
            "Withdrawn", "This line has been withdrawn by the newsroom."
        )  # fmt: skip
        assert "url" not in item and "authors" not in item
        assert item["_flashwire"]["retracted"] is True and item["_flashwire"]["reason"] == "killed"
        assert item["_flashwire"]["urgency"] == "flash" and item["tags"] == ["politics"]
        assert item["date_modified"] > item["date_published"]
        assert during.json_item(kept)["_flashwire"]["retracted"] is False
        rss = during.rss_item(killed)
        assert rss.title == "Withdrawn" and "link" not in rss
        assert categories(rss, STATUS) == [("withdrawn", None)]
        assert categories(rss, URGENCY) == [("flash", None)]
        assert [e.id for e in during.atom.entries] == [urn(kept)]
        [tombstone] = during.tombstones()
        assert tombstone.get("ref") == urn(killed) and tombstone.get("when") == item["date_modified"]
        assert tombstone.findtext(f"{AT}comment") == "This line has been withdrawn by the newsroom."

        # A day later: the kill's record in the killed set is older than the window. It leaves the
        # window at `left_ms`, a moment after the feed's Last-Modified (as a day after it would be).
        modified_s = int(parsedate_to_datetime(during.responses["json"].headers["last-modified"]).timestamp())
        left_ms = (modified_s + 1) * 1000
        redis = stack.redis()
        try:
            killed_set = stack.keys.killed("en")
            assert await redis.zscore(killed_set, killed["id"]) is not None
            await redis.zadd(killed_set, {killed["id"]: left_ms - TOMBSTONE_WINDOW_MS}, xx=True)
        finally:
            await redis.aclose()
        await asyncio.sleep(max(0.0, left_ms / 1000 - time.time()) + 0.01)
        after = await Feeds.read(client, "en")
        for form, response in after.responses.items():
            assert response.headers["etag"] != during.responses[form].headers["etag"], form
            since = during.responses[form].headers["last-modified"]
            assert (
                await client.get(f"/feeds/en.{form}", headers={"If-Modified-Since": since})
            ).status_code == 200
        assert [i["id"] for i in after.json["items"]] == [urn(kept)]
        assert [e.id for e in after.rss.entries] == [urn(kept)]
        assert [e.id for e in after.atom.entries] == [urn(kept)] and after.tombstones() == []


async def test_a_correction_changes_the_item_in_place(stack: Stack) -> None:
    """A correction keeps the item's id (JSON Feed `id`, RSS `guid`, Atom `id`) and updates it: new
    title, urgency, JSON `date_modified` and `_flashwire.version`, Atom `updated`, RSS
    `dcterms:modified`; the ETag changes."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(
            client, chief, "Quake of 6.8 hits Chile", urgency="urgent", topics=["latin-america"]
        )
        await stack.until_applied()
        before = await eventually(lambda: _with_items(client, "en", 1))
        correction = await client.post(
            f"/api/v1/lines/{line['id']}/corrections",
            json={"text": "Quake of 7.1 hits Chile", "urgency": "flash"},
            headers=auth(chief),
        )
        assert correction.status_code in (200, 201, 202), correction.text
        await stack.until_applied()
        after = await changed(client, "en", before.responses["json"].headers["etag"])

        for form, response in after.responses.items():
            assert response.headers["etag"] != before.responses[form].headers["etag"], form
        old, new = before.json_item(line), after.json_item(line)
        assert len(after.json["items"]) == 1
        assert (new["title"], new["content_text"]) == ("Quake of 7.1 hits Chile", "Quake of 7.1 hits Chile")
        assert new["date_published"] == old["date_published"] and new["date_modified"] > old["date_modified"]
        assert (new["_flashwire"]["version"], new["_flashwire"]["urgency"]) == (2, "flash")
        old_rss, new_rss = before.rss_item(line), after.rss_item(line)
        assert len(after.rss.entries) == 1 and new_rss.title == "Quake of 7.1 hits Chile"
        assert new_rss.published == old_rss.published
        assert "updated" in old_rss.keys() and "updated" in new_rss.keys()  # from dcterms:modified
        assert (old_rss.updated, new_rss.updated) == (old["date_modified"], new["date_modified"])
        assert categories(new_rss, URGENCY) == [("flash", None)]
        old_atom, new_atom = before.atom_entry(line), after.atom_entry(line)
        assert len(after.atom.entries) == 1 and new_atom.title == "Quake of 7.1 hits Chile"
        assert (old_atom.updated, new_atom.updated) == (old["date_modified"], new["date_modified"])
        assert categories(new_atom, URGENCY) == [("flash", "Flash")]
