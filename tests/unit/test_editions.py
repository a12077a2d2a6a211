"""flashwire.core.editions: one table of edition names behind the config's `name` and the feeds' titles
(in process, against the session's redis-server)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from flashwire.core.editions import EDITION_NAMES, EditionName, edition_name
from flashwire.core.settings import DEFAULT_EDITIONS
from flashwire.dev.redis_server import RedisProcess
from tests.conftest import serve_in_process

ATOM = "{http://www.w3.org/2005/Atom}"


def test_every_named_edition_has_a_name_and_a_breaking_phrase() -> None:
    """The default editions and the others the table knows have both names; an unknown one is shown by
    its code and titled in English, never refused."""
    assert set(DEFAULT_EDITIONS) <= set(EDITION_NAMES)
    assert all(names.name and names.breaking for names in EDITION_NAMES.values())
    assert edition_name("it") == EditionName(name="it", breaking="Breaking news")


async def test_the_config_and_the_feeds_name_an_edition_from_the_one_table(
    shared_redis_server: RedisProcess,
) -> None:
    """GET /api/v1/config's `name` and the JSON Feed, RSS and Atom titles of each configured edition
    (a default one, one only the table knows, an unknown one) come from the same entry."""
    editions = ("ar", "fr", "it")
    async with serve_in_process(shared_redis_server, FLASHWIRE_EDITIONS=",".join(editions)) as app:
        config = (await app.client.get("/api/v1/config")).json()
        assert {e["code"]: e["name"] for e in config["editions"]} == {
            code: edition_name(code).name for code in editions
        }
        for code in editions:
            title = f"Flashwire — {edition_name(code).breaking}"
            feed = await app.client.get(f"/feeds/{code}.json")
            assert feed.status_code == 200 and feed.json()["title"] == title, code
            rss = ET.fromstring((await app.client.get(f"/feeds/{code}.rss")).content)
            assert rss.findtext("channel/title") == title, code
            atom = ET.fromstring((await app.client.get(f"/feeds/{code}.atom")).content)
            assert atom.findtext(f"{ATOM}title") == title, code
