"""Feeds of each edition's live lines: JSON Feed 1.1, RSS 2.0 and Atom (with RFC 6721 tombstones).

For syndication partners that poll, and for the widget's last fallback. Each
answer carries an ETag and Last-Modified taken from the edition's ticker
cursor, so a conditional request costs a snapshot read and gets 304 when
nothing changed. Retracted lines of the last day appear in Atom as
deleted-entry tombstones, so partners that copied a killed line learn it.
"""

from __future__ import annotations

import html
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree as ET

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, ms_from_iso, now_ms
from flashwire.core.cursors import cursor_key
from flashwire.core.editions import edition_name
from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.service.errors import ApiError
from flashwire.service.hub import Hub
from flashwire.service.origins import OriginPolicy

TOMBSTONE_WINDOW_MS = 24 * 3600 * 1000
# A feed lists the newest live lines of its edition, pinned first, at most this many.
FEED_MAX_ITEMS = 200
ATOM = "http://www.w3.org/2005/Atom"
TOMBSTONES = "http://purl.org/atompub/tombstones/1.0"
XHTML = "http://www.w3.org/1999/xhtml"
MEDIA_TYPES = {
    "json": "application/feed+json; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
}


def _uri(line_id: str) -> str:
    return f"urn:flashwire:line:{line_id}"


def _http_date(ms: int) -> str:
    from datetime import UTC, datetime

    return format_datetime(datetime.fromtimestamp(ms // 1000, tz=UTC), usegmt=True)


def json_feed(base: str, edition: str, direction: str, lines: list[dict[str, Any]], cursor: str) -> bytes:
    """A JSON Feed 1.1 document; `_flashwire` carries direction, urgency and pinning."""
    items = []
    for line in lines:
        item: dict[str, Any] = {
            "id": _uri(line["id"]),
            "title": line["text"],
            "content_text": line["text"],
            "date_published": line["published_at"],
            "date_modified": line["updated_at"],
            "language": line.get("language", edition),
            "tags": line.get("topics", []),
            "_flashwire": {
                "line_id": line["id"],
                "version": line["version"],
                "urgency": line["urgency"],
                "iptc_urgency": line.get("iptc_urgency"),
                "direction": line.get("direction", direction),
                "pinned": bool(line.get("pinned")),
                "expires_at": line.get("expires_at"),
            },
        }
        if line.get("url"):
            item["url"] = line["url"]
        if line.get("source"):
            item["authors"] = [{"name": line["source"]}]
        items.append(item)
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


def rss_feed(base: str, edition: str, lines: list[dict[str, Any]], updated_ms: int) -> bytes:
    """An RSS 2.0 document."""
    ET.register_namespace("atom", ATOM)
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
        item = ET.SubElement(channel, "item")
        ET.SubElement(item, "title").text = line["text"]
        # RSS readers take <description> as HTML: escape it, so the headline stays text.
        ET.SubElement(item, "description").text = html.escape(line["text"], quote=False)
        if line.get("url"):
            ET.SubElement(item, "link").text = line["url"]
        ET.SubElement(item, "guid", {"isPermaLink": "false"}).text = _uri(line["id"])
        ET.SubElement(item, "pubDate").text = _http_date(ms_from_iso(line["published_at"]))
        for topic in line.get("topics", []):
            ET.SubElement(item, "category").text = topic
        if line.get("source"):
            ET.SubElement(item, "source", {"url": f"{base}/feeds/{edition}.rss"}).text = line["source"]
    body: bytes = ET.tostring(rss, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def atom_feed(
    base: str,
    edition: str,
    direction: str,
    lines: list[dict[str, Any]],
    killed: list[dict[str, Any]],
    updated_ms: int,
) -> bytes:
    """An Atom document; killed lines become deleted-entry tombstones (RFC 6721)."""
    ET.register_namespace("", ATOM)
    ET.register_namespace("at", TOMBSTONES)
    ET.register_namespace("xhtml", XHTML)
    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": edition})
    ET.SubElement(feed, f"{{{ATOM}}}id").text = f"urn:flashwire:edition:{edition}"
    ET.SubElement(feed, f"{{{ATOM}}}title").text = f"Flashwire — {edition_name(edition).breaking}"
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = iso_from_ms(updated_ms)
    ET.SubElement(feed, f"{{{ATOM}}}link", {"rel": "self", "href": f"{base}/feeds/{edition}.atom"})
    ET.SubElement(feed, f"{{{ATOM}}}link", {"rel": "alternate", "href": f"{base}/"})
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    ET.SubElement(author, f"{{{ATOM}}}name").text = "Flashwire"
    for line in lines:
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
        for topic in line.get("topics", []):
            ET.SubElement(entry, f"{{{ATOM}}}category", {"term": topic})
        if line.get("source"):
            source = ET.SubElement(entry, f"{{{ATOM}}}author")
            ET.SubElement(source, f"{{{ATOM}}}name").text = line["source"]
    for line in killed:
        ET.SubElement(
            feed, f"{{{TOMBSTONES}}}deleted-entry", {"ref": _uri(line["id"]), "when": line["updated_at"]}
        )
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


async def _killed(request: Request, edition: str) -> list[dict[str, Any]]:
    redis, keys = request.app.state.redis, request.app.state.keys
    assert isinstance(keys, Keys)
    ids = await redis.zrangebyscore(keys.killed(edition), now_ms() - TOMBSTONE_WINDOW_MS, "+inf")
    docs = await redis.mget([keys.line(i.decode()) for i in ids]) if ids else []
    return [orjson.loads(doc) for doc in docs if doc is not None]


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
    lines = live[:FEED_MAX_ITEMS]
    killed = await _killed(request, edition) if form == "atom" else []
    last_ms = max([cursor_key(cursor)[0]] + [ms_from_iso(line["updated_at"]) for line in killed])
    updated_ms = last_ms or now_ms()
    etag = f'W/"{edition}-{form}-{cursor}-{len(killed)}"'
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
        body = json_feed(base, edition, direction, lines, cursor)
    elif form == "rss":
        body = rss_feed(base, edition, lines, updated_ms)
    else:
        body = atom_feed(base, edition, direction, lines, killed, updated_ms)
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
