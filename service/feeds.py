"""Feeds of each edition's live lines: JSON Feed 1.1, RSS 2.0 and Atom (RFC 4287), saying what they mean.

For syndication partners that poll, and for the widget's last fallback. Every item carries its
line's urgency in the format's own terms: Atom and RSS as a category of the scheme
`urn:flashwire:urgency` (RFC 4287 section 4.2.2; RSS 2.0 `<category domain>`), with a label in
the edition's language in Atom; JSON Feed, whose `tags` have no scheme, in its `_flashwire`
extension (JSON Feed 1.1, "Extensions").

A line killed in the last 24 hours is withdrawn in every format under its own id: Atom replaces
its entry with an RFC 6721 `at:deleted-entry` tombstone; RSS 2.0 and JSON Feed have no deletion,
so they keep the item with a "Withdrawn" title and text (never the killed headline, which must
stop spreading) and a marker (RSS category `withdrawn` of `urn:flashwire:status`, JSON Feed
`_flashwire.retracted`), so an aggregator that holds the item replaces it by its guid or id.
docs/feeds.md has the table of what each format does.

Each answer carries an ETag and Last-Modified taken from the edition's ticker cursor and the
withdrawn items it shows, so a conditional request gets 304 while nothing changed; it costs the
node's snapshot (in memory while current) and one small read of the edition's kills.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree as ET

import orjson
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, ms_from_iso, now_ms
from flashwire.core.cursors import cursor_key
from flashwire.core.editions import edition_name, urgency_label
from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.service.errors import ApiError
from flashwire.service.hub import Hub
from flashwire.service.origins import OriginPolicy

# A killed line is shown withdrawn this long after its kill (the worker keeps it listed as long,
# workers/apply.py KILLED_KEEP_MS), then leaves every feed.
TOMBSTONE_WINDOW_MS = 24 * 3600 * 1000
# A feed lists the newest live lines of its edition, pinned first, at most this many.
FEED_MAX_ITEMS = 200
# ... and after them the newest withdrawn lines of the window, at most this many.
WITHDRAWN_MAX_ITEMS = 200
ATOM = "http://www.w3.org/2005/Atom"
TOMBSTONES = "http://purl.org/atompub/tombstones/1.0"
XHTML = "http://www.w3.org/1999/xhtml"
DCTERMS = "http://purl.org/dc/terms/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# The category schemes (Atom `scheme`, RSS `domain`): stable names, the same on every deployment.
URGENCY_SCHEME = "urn:flashwire:urgency"
TOPIC_SCHEME = "urn:flashwire:topic"
STATUS_SCHEME = "urn:flashwire:status"
WITHDRAWN = "withdrawn"
MEDIA_TYPES = {
    "json": "application/feed+json; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """What a withdrawn item says in place of the killed line: a `title` and a sentence, `text`."""

    title: str
    text: str


WITHDRAWALS: dict[str, Withdrawal] = {
    "en": Withdrawal("Withdrawn", "This line has been withdrawn by the newsroom."),
    "ar": Withdrawal("خبر مسحوب", "سحبت غرفة الأخبار هذا الخبر."),
    "es": Withdrawal("Noticia retirada", "La redacción ha retirado esta noticia."),
    "fr": Withdrawal("Dépêche retirée", "La rédaction a retiré cette dépêche."),
    "de": Withdrawal("Zurückgezogen", "Die Redaktion hat diese Meldung zurückgezogen."),
}


def withdrawal(edition: str) -> Withdrawal:
    """The withdrawal notice in the edition's language (English for an edition not in the table)."""
    return WITHDRAWALS.get(edition, WITHDRAWALS["en"])


def _uri(line_id: str) -> str:
    return f"urn:flashwire:line:{line_id}"


def _http_date(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms // 1000, tz=UTC), usegmt=True)


# -- the documents ----------------------------------------------------------------------------------


def _json_item(edition: str, direction: str, line: dict[str, Any], *, withdrawn: bool) -> dict[str, Any]:
    extension: dict[str, Any] = {
        "line_id": line["id"],
        "version": line["version"],
        "urgency": line["urgency"],
        "iptc_urgency": line.get("iptc_urgency"),
        "urgency_label": urgency_label(edition, line["urgency"]),
        "direction": line.get("direction", direction),
        "pinned": bool(line.get("pinned")),
        "expires_at": line.get("expires_at"),
        "retracted": withdrawn,
    }
    item: dict[str, Any] = {
        "id": _uri(line["id"]),
        "title": line["text"],
        "content_text": line["text"],
        "date_published": line["published_at"],
        "date_modified": line["updated_at"],
        "language": line.get("language", edition),
        "tags": line.get("topics", []),
        "_flashwire": extension,
    }
    if withdrawn:
        # Most JSON Feed readers ignore extensions: the title and text themselves say it.
        notice = withdrawal(edition)
        item["title"], item["content_text"] = notice.title, notice.text
        extension["reason"] = "killed"
        return item
    if line.get("url"):
        item["url"] = line["url"]
    if line.get("source"):
        item["authors"] = [{"name": line["source"]}]
    return item


def json_feed(
    base: str,
    edition: str,
    direction: str,
    lines: list[dict[str, Any]],
    cursor: str,
    withdrawn: Sequence[dict[str, Any]] = (),
) -> bytes:
    """A JSON Feed 1.1 document: the live lines, then the withdrawn ones (`_flashwire.retracted`);
    `_flashwire` carries direction, urgency (with its label) and pinning."""
    items = [_json_item(edition, direction, line, withdrawn=False) for line in lines]
    items += [_json_item(edition, direction, line, withdrawn=True) for line in withdrawn]
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": f"Flashwire — {edition_name(edition).breaking}",
        "home_page_url": f"{base}/",
        "feed_url": f"{base}/feeds/{edition}.json",
        "language": edition,
        "_flashwire": {"edition": edition, "direction": direction, "cursor": cursor},
        "items": items,
    }
    return orjson.dumps(document)


def _rss_item(channel: ET.Element, base: str, edition: str, line: dict[str, Any], *, withdrawn: bool) -> None:
    item = ET.SubElement(channel, "item")
    notice = withdrawal(edition) if withdrawn else Withdrawal(line["text"], line["text"])
    ET.SubElement(item, "title").text = notice.title
    # RSS readers take <description> as HTML: escape it, so the headline stays text.
    ET.SubElement(item, "description").text = html.escape(notice.text, quote=False)
    if line.get("url") and not withdrawn:
        ET.SubElement(item, "link").text = line["url"]
    ET.SubElement(item, "guid", {"isPermaLink": "false"}).text = _uri(line["id"])
    ET.SubElement(item, "pubDate").text = _http_date(ms_from_iso(line["published_at"]))
    # RSS 2.0 has no "updated": Dublin Core's `modified` says when a correction or kill changed it.
    ET.SubElement(item, f"{{{DCTERMS}}}modified").text = line["updated_at"]
    ET.SubElement(item, "category", {"domain": URGENCY_SCHEME}).text = line["urgency"]
    for topic in line.get("topics", []):
        ET.SubElement(item, "category", {"domain": TOPIC_SCHEME}).text = topic
    if withdrawn:
        ET.SubElement(item, "category", {"domain": STATUS_SCHEME}).text = WITHDRAWN
    elif line.get("source"):
        ET.SubElement(item, "source", {"url": f"{base}/feeds/{edition}.rss"}).text = line["source"]


def rss_feed(
    base: str,
    edition: str,
    lines: list[dict[str, Any]],
    updated_ms: int,
    withdrawn: Sequence[dict[str, Any]] = (),
) -> bytes:
    """An RSS 2.0 document: the live lines, then the withdrawn ones (category `withdrawn`)."""
    ET.register_namespace("atom", ATOM)
    ET.register_namespace("dcterms", DCTERMS)
    rss = ET.Element("rss", {"version": "2.0"})
    channel = ET.SubElement(rss, "channel")
    ET.SubElement(channel, "title").text = f"Flashwire — {edition_name(edition).breaking}"
    ET.SubElement(channel, "link").text = f"{base}/"
    ET.SubElement(channel, "description").text = f"Breaking news lines, edition {edition}"
    ET.SubElement(channel, "language").text = edition
    ET.SubElement(channel, "lastBuildDate").text = _http_date(updated_ms)
    ET.SubElement(channel, f"{{{ATOM}}}link", {"href": f"{base}/feeds/{edition}.rss", "rel": "self",
                                                "type": "application/rss+xml"})  # fmt: skip
    for line in lines:
        _rss_item(channel, base, edition, line, withdrawn=False)
    for line in withdrawn:
        _rss_item(channel, base, edition, line, withdrawn=True)
    body: bytes = ET.tostring(rss, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def _atom_entry(feed: ET.Element, edition: str, direction: str, line: dict[str, Any]) -> None:
    entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
    ET.SubElement(entry, f"{{{ATOM}}}id").text = _uri(line["id"])
    if direction == "rtl":
        # Atom carries text direction only through XHTML content.
        title = ET.SubElement(entry, f"{{{ATOM}}}title", {"type": "xhtml"})
        ET.SubElement(title, f"{{{XHTML}}}div", {"dir": "rtl"}).text = line["text"]
    else:
        ET.SubElement(entry, f"{{{ATOM}}}title", {"type": "text"}).text = line["text"]
    ET.SubElement(entry, f"{{{ATOM}}}published").text = line["published_at"]
    ET.SubElement(entry, f"{{{ATOM}}}updated").text = line["updated_at"]
    if line.get("url"):
        ET.SubElement(entry, f"{{{ATOM}}}link", {"rel": "alternate", "href": line["url"]})
    urgency = {
        "scheme": URGENCY_SCHEME,
        "term": line["urgency"],
        "label": urgency_label(edition, line["urgency"]),
    }
    ET.SubElement(entry, f"{{{ATOM}}}category", urgency)
    for topic in line.get("topics", []):
        ET.SubElement(entry, f"{{{ATOM}}}category", {"scheme": TOPIC_SCHEME, "term": topic})
    if line.get("source"):
        source = ET.SubElement(entry, f"{{{ATOM}}}author")
        ET.SubElement(source, f"{{{ATOM}}}name").text = line["source"]


def atom_feed(
    base: str,
    edition: str,
    direction: str,
    lines: list[dict[str, Any]],
    killed: Sequence[dict[str, Any]],
    updated_ms: int,
) -> bytes:
    """An Atom document; killed lines become deleted-entry tombstones (RFC 6721) with a comment."""
    ET.register_namespace("", ATOM)
    ET.register_namespace("at", TOMBSTONES)
    ET.register_namespace("xhtml", XHTML)
    feed = ET.Element(f"{{{ATOM}}}feed", {XML_LANG: edition})
    ET.SubElement(feed, f"{{{ATOM}}}id").text = f"urn:flashwire:edition:{edition}"
    ET.SubElement(feed, f"{{{ATOM}}}title").text = f"Flashwire — {edition_name(edition).breaking}"
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = iso_from_ms(updated_ms)
    ET.SubElement(feed, f"{{{ATOM}}}link", {"rel": "self", "href": f"{base}/feeds/{edition}.atom"})
    ET.SubElement(feed, f"{{{ATOM}}}link", {"rel": "alternate", "href": f"{base}/"})
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    ET.SubElement(author, f"{{{ATOM}}}name").text = "Flashwire"
    for line in lines:
        _atom_entry(feed, edition, direction, line)
    for line in killed:
        attributes = {"ref": _uri(line["id"]), "when": line["updated_at"]}
        tombstone = ET.SubElement(feed, f"{{{TOMBSTONES}}}deleted-entry", attributes)
        ET.SubElement(tombstone, f"{{{TOMBSTONES}}}comment").text = withdrawal(edition).text
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


# -- the kills --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kills:
    """The killed lines a feed shows withdrawn (newest kill first) and `left_ms`, when the latest
    kill to leave the window left it (epoch ms; 0 if none has): the feed changed then too."""

    lines: list[dict[str, Any]]
    left_ms: int


async def read_kills(redis: Redis, keys: Keys, edition: str, now: int) -> Kills:
    """The kills shown at `now` (epoch ms): those of the edition's killed set (scored by kill time,
    written by the worker in the same commit as the ticker's retract event) less than
    TOMBSTONE_WINDOW_MS old, at most WITHDRAWN_MAX_ITEMS, with the killed lines' states."""
    start = now - TOMBSTONE_WINDOW_MS
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrangebyscore(
            keys.killed(edition), "+inf", f"({start}", start=0, num=WITHDRAWN_MAX_ITEMS, withscores=True
        )
        # The worker trims the set only as it adds a kill (which moves the ticker): the newest kill
        # out of the window is still there, so the feed can say when it last changed.
        pipe.zrevrangebyscore(keys.killed(edition), start, "-inf", start=0, num=1, withscores=True)
        inside, outside = await pipe.execute()
    docs = await redis.mget([keys.line(member.decode()) for member, _ in inside]) if inside else []
    lines = [orjson.loads(doc) for doc in docs if doc is not None]
    return Kills(lines, int(outside[0][1]) + TOMBSTONE_WINDOW_MS if outside else 0)


# -- the endpoint -----------------------------------------------------------------------------------


def _etag(edition: str, form: str, cursor: str, withdrawn: list[dict[str, Any]]) -> str:
    """A weak ETag of what the body is made of: the cursor and the withdrawn lines shown."""
    shown = ",".join(line["id"] for line in withdrawn)
    digest = hashlib.blake2b(shown.encode(), digest_size=6).hexdigest() if shown else "0"
    return f'W/"{edition}-{form}-{cursor}-{digest}"'


async def feed(request: Request) -> Response:
    """GET /feeds/{edition}.{json|rss|atom}."""
    settings: Settings = request.app.state.settings
    hub: Hub = request.app.state.hub
    origins: OriginPolicy = request.app.state.origins
    edition, form = request.path_params["edition"], request.path_params["format"]
    if edition not in settings.editions:
        raise ApiError(404, "not_found", f"no edition {edition!r}", field="edition")
    if form not in MEDIA_TYPES:
        raise ApiError(404, "not_found", "feeds are .json, .rss or .atom", field="format")
    if not origins.allows(request):
        raise ApiError(
            403, "forbidden", f"origin not allowed: {request.headers.get('origin')}", field="Origin"
        )
    cursor, live = await hub.snapshot(edition)
    keys: Keys = request.app.state.keys
    kills = await read_kills(request.app.state.redis, keys, edition, now_ms())
    # The kills are read after the snapshot: a kill the node has not dispatched yet wins.
    killed_ids = {line["id"] for line in kills.lines}
    lines = [line for line in live if line["id"] not in killed_ids][:FEED_MAX_ITEMS]
    last_ms = max(
        [cursor_key(cursor)[0], kills.left_ms] + [ms_from_iso(line["updated_at"]) for line in kills.lines]
    )
    updated_ms = last_ms or now_ms()
    etag = _etag(edition, form, cursor, kills.lines)
    headers = {
        "ETag": etag,
        "Last-Modified": _http_date(updated_ms),
        "Cache-Control": f"public, max-age={max(1, round(settings.feed_poll_s))}",
        # The CORS headers depend on Origin: shared caches must keep one copy per origin.
        "Vary": "Origin",
        **origins.cors_headers(request),
    }
    if _not_modified(request, etag, updated_ms):
        return Response(status_code=304, headers=headers)
    base = str(request.base_url).rstrip("/")
    direction = settings.direction(edition)
    if form == "json":
        body = json_feed(base, edition, direction, lines, cursor, kills.lines)
    elif form == "rss":
        body = rss_feed(base, edition, lines, updated_ms, kills.lines)
    else:
        body = atom_feed(base, edition, direction, lines, kills.lines, updated_ms)
    headers["Content-Language"] = edition
    return Response(body, media_type=MEDIA_TYPES[form], headers=headers)


def _not_modified(request: Request, etag: str, updated_ms: int) -> bool:
    match = request.headers.get("if-none-match")
    if match is not None:
        return etag in {tag.strip() for tag in match.split(",")} or match.strip() == "*"
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return updated_ms // 1000 <= int(parsedate_to_datetime(since).timestamp())
    except (TypeError, ValueError):
        return False


routes = [Route("/feeds/{edition}.{format}", feed, methods=["GET"])]
