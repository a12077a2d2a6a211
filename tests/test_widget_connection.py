"""The <flash-ticker> widget's connection handling under faults (issue 11, findings 13 and 16 to 19).

A partner page on another origin, in a real headless chromium, against a real node and worker,
often through tests/proxy.py (which answers chosen requests with 502/503, resets connections, and
lists the open streams), on a phone (390 px) in an Arabic page or on a desktop (1366 px) in an
English page, each page holding an English and an Arabic ticker, which share the
page's one connection; so every finding is seen with both languages' tickers. The two tests whose
tickers show a state (reconnecting, offline) run at both widths and check that the bar still fits;
the others, where only the connection differs, run once each, at one width or the other. After
each fault the node's own count of open readers (`flashwire_connections` on /metrics) shows the page
holding exactly one connection. The node runs with a 1 s heartbeat, so the dead-connection rule
(2.5 heartbeats) trips within seconds.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.conftest import ServiceNode, Stack, eventually, post_line
from tests.partner import PartnerSite
from tests.proxy import CuttingProxy
from tests.widget_checks import ANNOUNCEMENTS, connections, one_connection

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

HEARTBEAT = {"FLASHWIRE_HEARTBEAT_S": "1"}
Look = tuple[dict[str, int], str]
LOOKS: dict[str, Look] = {
    "phone-ar": ({"width": 390, "height": 844}, "ar"),
    "desktop-en": ({"width": 1366, "height": 768}, "en"),
}
RECONNECTING = {"en": "Reconnecting…", "ar": "جارٍ إعادة الاتصال…"}
OFFLINE = {"en": "Offline", "ar": "غير متصل"}


@pytest.fixture(params=list(LOOKS))
def look(request: pytest.FixtureRequest) -> Look:
    """The viewport and the page's language of one run (both by default; a test naming one with
    `parametrize("look", [...], indirect=True)` runs in that one only)."""
    return LOOKS[request.param]


async def _open(
    chromium: Browser,
    partner: PartnerSite,
    node: ServiceNode,
    look: Look,
    name: str,
    *,
    server: str = "",
    head: str = "",
    english: str = "",
) -> Page:
    """The partner page (its own origin, loading ticker.js from `node`) with an English ticker (#en,
    with the attributes `english`) and an Arabic one (#ar) in #a, and an empty #b."""
    viewport, language = look
    attrs = f' server="{server}"' if server else ""
    body = (
        f'<div id=a><flash-ticker id=en edition="en"{attrs} {english}></flash-ticker>'
        f'<flash-ticker id=ar edition="ar"{attrs}></flash-ticker></div><div id=b></div>'
    )
    page = await chromium.new_page(viewport=viewport)
    await page.goto(partner.page(name, body, node, head=head, lang=language))
    return page


async def _post_both(client: httpx.AsyncClient, token: str, english: str, arabic: str) -> None:
    await post_line(client, token, english)
    await post_line(client, token, arabic, edition="ar")


def _texts(page: Page, ticker: str) -> Locator:
    return page.locator(f"#{ticker} .line .text")


async def _fits(page: Page) -> None:
    """The page is no wider than its viewport, and each bar keeps room for its moving text beside
    its label, its notice and its button."""
    width = await page.evaluate("innerWidth")
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= width
    for ticker in ("en", "ar"):
        room = await page.locator(f"#{ticker}").evaluate(
            "t => t.shadowRoot.querySelector('.viewport').getBoundingClientRect().width"
        )
        assert room >= width * 0.25, (ticker, room, width)


@pytest.mark.parametrize("look", ["phone-ar"], indirect=True)
async def test_freeze_and_resume_leaves_one_connection(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """A tab frozen for 5 s (longer than the dead-connection rule's 2.5 s) and resumed, through
    Chromium's lifecycle API, shows the lines posted meanwhile once and holds one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    page = await _open(chromium, partner, node, look, "freeze.html")
    async with httpx.AsyncClient(base_url=node.url) as client:
        await _post_both(client, editor, "before the freeze", "قبل التجميد")
        await expect(_texts(page, "en")).to_have_text(["before the freeze"])
        await expect(_texts(page, "ar")).to_have_text(["قبل التجميد"])
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
        await _post_both(client, editor, "during the freeze", "أثناء التجميد")
        await asyncio.sleep(5)
        await cdp.send("Page.setWebLifecycleState", {"state": "active"})
        await expect(_texts(page, "en")).to_have_text(["during the freeze", "before the freeze"])
        await expect(_texts(page, "ar")).to_have_text(["أثناء التجميد", "قبل التجميد"])
        await one_connection(node)
        await _post_both(client, editor, "after the freeze", "بعد التجميد")
        await expect(_texts(page, "en")).to_have_text(
            ["after the freeze", "during the freeze", "before the freeze"]
        )
        await expect(_texts(page, "ar")).to_have_text(["بعد التجميد", "أثناء التجميد", "قبل التجميد"])
        for ticker in ("en", "ar"):
            await expect(page.locator(f"#{ticker}")).to_have_attribute("data-transport", "ws")
        await one_connection(node)


async def test_outage_shows_reconnecting_then_recovers_on_one_connection(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """While the node cannot be reached (every connection reset) each bar says it is reconnecting
    in its language, announced once on the page, and still fits the screen; when the node can be
    reached again the page is back on WebSocket, with the lines posted meanwhile once, on one
    connection, and the notices gone."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    proxy = await CuttingProxy(node.port).start()
    try:
        page = await _open(chromium, partner, node, look, "outage.html", server=proxy.url)
        async with httpx.AsyncClient(base_url=node.url) as client:
            await _post_both(client, editor, "before the outage", "قبل الانقطاع")
            await expect(_texts(page, "ar")).to_have_text(["قبل الانقطاع"])
            await page.evaluate(ANNOUNCEMENTS)
            proxy.resetting = True
            proxy.reset_all()
            for ticker in ("en", "ar"):
                status = page.locator(f"#{ticker} .status")
                await expect(status).to_have_text(RECONNECTING[ticker], timeout=10_000)
                await expect(status).to_be_visible()
            await _fits(page)
            await _post_both(client, editor, "during the outage", "أثناء الانقطاع")
            await asyncio.sleep(3)
            proxy.resetting = False
            await expect(_texts(page, "en")).to_have_text(
                ["during the outage", "before the outage"], timeout=20_000
            )
            await expect(_texts(page, "ar")).to_have_text(["أثناء الانقطاع", "قبل الانقطاع"])
            for ticker in ("en", "ar"):
                await expect(page.locator(f"#{ticker} .status")).to_be_hidden()
                await expect(page.locator(f"#{ticker}")).to_have_attribute("data-transport", "ws")
            await one_connection(node, proxy)
            announced = await page.evaluate("window.__announced")
            # The first ticker of the page speaks for both.
            assert announced.count("Reconnecting…") == 1, announced
            assert RECONNECTING["ar"] not in announced, announced
    finally:
        await proxy.stop()


@pytest.mark.parametrize("look", ["desktop-en"], indirect=True)
async def test_websocket_blocked_by_csp_falls_back_to_sse(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """A page whose Content-Security-Policy allows the server over http but not ws: (Chromium fires
    only `error` for the blocked WebSocket) gets both tickers over SSE within seconds, on one
    connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    csp = f'<meta http-equiv="Content-Security-Policy" content="connect-src {node.url}">'
    page = await _open(chromium, partner, node, look, "csp.html", head=csp)
    for ticker in ("en", "ar"):
        await expect(page.locator(f"#{ticker}")).to_have_attribute("data-transport", "sse", timeout=5000)
    async with httpx.AsyncClient(base_url=node.url) as client:
        await _post_both(client, editor, "over server-sent events", "عبر الأحداث المرسلة من الخادم")
        await expect(_texts(page, "en")).to_have_text(["over server-sent events"], timeout=5000)
        await expect(_texts(page, "ar")).to_have_text(["عبر الأحداث المرسلة من الخادم"])
    await one_connection(node)


@pytest.mark.parametrize("look", ["phone-ar"], indirect=True)
async def test_after_503s_the_widget_returns_to_websocket(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """A live page whose proxy starts answering 503 to every WebSocket upgrade and every /sse
    request (a load balancer while the node restarts; the feeds still served) goes down to the
    feeds; once the proxy serves again the page probes back and returns to WebSocket, on one
    connection, resuming from the feeds' cursors: a line the feed gave is announced once."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    proxy = await CuttingProxy(node.port).start()
    try:
        page = await _open(
            chromium, partner, node, look, "503.html", server=proxy.url, english='poll-interval="1"'
        )
        async with httpx.AsyncClient(base_url=node.url) as client:
            await _post_both(client, editor, "before the 503s", "قبل الأخطاء")
            await expect(_texts(page, "en")).to_have_text(["before the 503s"])
            await expect(_texts(page, "ar")).to_have_text(["قبل الأخطاء"])
            await asyncio.sleep(1)  # their announcement made (0.5 s after the last line)
            await page.evaluate(ANNOUNCEMENTS)
            proxy.answer = lambda line, upgrade: 503 if upgrade or " /sse" in line else None
            proxy.reset_all()
            for ticker in ("en", "ar"):
                polling = page.locator(f"#{ticker}")
                await expect(polling).to_have_attribute("data-transport", "poll", timeout=20_000)
            await _post_both(client, editor, "from the feed", "من الخلاصة")
            await expect(_texts(page, "ar")).to_have_text(["من الخلاصة", "قبل الأخطاء"], timeout=5000)
            await expect(_texts(page, "en")).to_have_text(["from the feed", "before the 503s"])
            proxy.answer = None
            for ticker in ("en", "ar"):
                back = page.locator(f"#{ticker}")
                await expect(back).to_have_attribute("data-transport", "ws", timeout=20_000)
            await _post_both(client, editor, "back on WebSocket", "عدنا إلى ويب سوكت")
            english = ["back on WebSocket", "from the feed", "before the 503s"]
            await expect(_texts(page, "en")).to_have_text(english, timeout=3000)
            await expect(_texts(page, "ar")).to_have_text(["عدنا إلى ويب سوكت", "من الخلاصة", "قبل الأخطاء"])
        await one_connection(node, proxy)
        announced = await page.evaluate("window.__announced")
        assert announced.count("BREAKING: from the feed") == 1, announced
        assert not any("before the 503s" in text for text in announced), announced
        assert announced.count("BREAKING: back on WebSocket") == 1, announced
    finally:
        await proxy.stop()


@pytest.mark.parametrize("look", ["desktop-en"], indirect=True)
async def test_a_restart_behind_a_load_balancer_answering_502_recovers_on_websocket(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """A proxy answering 502 to every request for 6 s (a load balancer while the node restarts:
    the health check, the feeds and the streams alike) leaves the page on WebSocket, retrying; once
    it serves again the page is live on WebSocket with the lines posted meanwhile, on one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    proxy = await CuttingProxy(node.port).start()
    try:
        page = await _open(chromium, partner, node, look, "502.html", server=proxy.url)
        async with httpx.AsyncClient(base_url=node.url) as client:
            await _post_both(client, editor, "before the restart", "قبل إعادة التشغيل")
            await expect(_texts(page, "ar")).to_have_text(["قبل إعادة التشغيل"])
            proxy.answer = lambda line, upgrade: 502
            proxy.reset_all()
            await expect(page.locator("#en .status")).to_have_text(RECONNECTING["en"], timeout=10_000)
            await _post_both(client, editor, "during the restart", "أثناء إعادة التشغيل")
            await asyncio.sleep(6)
            assert any(status == 502 for _, status in proxy.answered), proxy.answered
            proxy.answer = None
            english = ["during the restart", "before the restart"]
            await expect(_texts(page, "en")).to_have_text(english, timeout=20_000)
            await expect(_texts(page, "ar")).to_have_text(["أثناء إعادة التشغيل", "قبل إعادة التشغيل"])
            for ticker in ("en", "ar"):
                await expect(page.locator(f"#{ticker}")).to_have_attribute("data-transport", "ws")
                await expect(page.locator(f"#{ticker}")).to_have_attribute("data-state", "live")
        await one_connection(node, proxy)
    finally:
        await proxy.stop()


async def test_offline_then_online(stack: Stack, partner: PartnerSite, chromium: Browser, look: Look) -> None:
    """`offline` shows the offline state at once, in each ticker's language, announced once, and
    drops the connection; `online` reconnects at once, with the lines posted meanwhile, on one
    connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    page = await _open(chromium, partner, node, look, "offline.html")
    await expect(page.locator("#ar")).to_have_attribute("data-transport", "ws")
    await one_connection(node)
    await page.evaluate(ANNOUNCEMENTS)
    await page.context.set_offline(True)
    for ticker in ("en", "ar"):
        await expect(page.locator(f"#{ticker} .status")).to_have_text(OFFLINE[ticker], timeout=1000)
    await expect(page.locator("#en [aria-live=polite]")).to_have_text("Offline")
    await _fits(page)
    await eventually(lambda: _zero(node))
    async with httpx.AsyncClient(base_url=node.url) as client:
        await _post_both(client, editor, "meanwhile", "في الأثناء")
    await asyncio.sleep(3)
    await page.context.set_offline(False)
    await expect(_texts(page, "en")).to_have_text(["meanwhile"], timeout=2000)
    await expect(_texts(page, "ar")).to_have_text(["في الأثناء"])
    for ticker in ("en", "ar"):
        await expect(page.locator(f"#{ticker} .status")).to_be_hidden()
    assert (await page.evaluate("window.__announced")).count("Offline") == 1
    await one_connection(node)


async def _zero(node: ServiceNode) -> bool:
    return await connections(node) == 0


@pytest.mark.parametrize("look", ["phone-ar"], indirect=True)
async def test_attribute_change_while_detached_starts_a_fresh_subscription(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """The English ticker moved out of the page, switched to es and put back shows the Spanish lines
    only; the page's connection then carries ar (resumed from its cursor) and es (fresh, no
    cursor), no longer en; the Arabic ticker goes on; one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "es", "ar"])
    proxy = await CuttingProxy(node.port).start()
    try:
        page = await _open(chromium, partner, node, look, "detached.html", server=proxy.url)
        # Live first, so that the English line comes as news (announced), not in the snapshot.
        await expect(page.locator("#en")).to_have_attribute("data-state", "live")
        async with httpx.AsyncClient(base_url=node.url) as client:
            await _post_both(client, editor, "English line", "خبر عربي")
            await post_line(client, editor, "Línea en español", edition="es")
            await expect(_texts(page, "en")).to_have_text(["English line"])
            await expect(_texts(page, "ar")).to_have_text(["خبر عربي"])
            await expect(page.locator("#en [aria-live=polite]")).to_have_text("BREAKING: English line")
            await page.evaluate(
                "() => { const t = document.querySelector('#en'); t.remove();"
                " t.setAttribute('edition', 'es'); window.__ticker = t; }"
            )
            await post_line(client, editor, "Otra línea", edition="es")
            await page.evaluate("() => document.querySelector('#b').append(window.__ticker)")
            # What its live region said was about the English lines: cleared with the change.
            await expect(page.locator("#en [aria-live=polite]")).to_have_text("")
            await expect(_texts(page, "en")).to_have_text(["Otra línea", "Línea en español"])
            await expect(page.locator("#en .label")).to_have_text("ÚLTIMA HORA")
            await _post_both(client, editor, "not shown", "خبر آخر")
            await post_line(client, editor, "En directo", edition="es")
            await expect(_texts(page, "en")).to_have_text(["En directo", "Otra línea", "Línea en español"])
            await expect(_texts(page, "ar")).to_have_text(["خبر آخر", "خبر عربي"])
        last = [c.request_line for c in proxy.connections if " /ws" in c.request_line][-1]
        query = parse_qs(urlsplit(last.split(" ")[1]).query)
        assert query["editions"] == ["ar,es"], last
        assert query["since"][0].startswith("ar:") and "," not in query["since"][0], last
        await one_connection(node, proxy)
    finally:
        await proxy.stop()


@pytest.mark.parametrize("look", ["desktop-en"], indirect=True)
async def test_a_corrected_filter_clears_data_error(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """A refused filter sets data-error on its ticker alone; correcting the attribute clears it and
    the ticker shows its lines, on the page's one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    page = await _open(chromium, partner, node, look, "error.html", english='topics="weather"')
    ticker = page.locator("#en")
    await expect(ticker).to_have_attribute("data-error", "topics: unknown topic 'weather'")
    assert await page.locator("#ar").get_attribute("data-error") is None
    await ticker.evaluate("t => t.setAttribute('topics', 'sports')")
    await expect(ticker).not_to_have_attribute("data-error", "topics: unknown topic 'weather'")
    assert await ticker.get_attribute("data-error") is None
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "match report", topics=["sports"])
        await post_line(client, editor, "not sports", topics=["politics"])
        await post_line(client, editor, "تقرير المباراة", edition="ar", topics=["sports"])
        await expect(_texts(page, "ar")).to_have_text(["تقرير المباراة"])
        await expect(_texts(page, "en")).to_have_text(["match report"])
    await one_connection(node)


@pytest.mark.parametrize("look", ["phone-ar"], indirect=True)
async def test_a_burst_is_announced_once(
    stack: Stack, partner: PartnerSite, chromium: Browser, look: Look
) -> None:
    """20 English lines and 3 Arabic ones posted at once change the page's live regions once per
    ticker: "BREAKING: 20 new lines" and the Arabic summary."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "ar"])
    page = await _open(chromium, partner, node, look, "burst.html")
    await expect(page.locator("#en")).to_have_attribute("data-transport", "ws")
    await one_connection(node)
    await page.evaluate(ANNOUNCEMENTS)
    async with httpx.AsyncClient(base_url=node.url) as client:
        await asyncio.gather(
            *(post_line(client, editor, f"burst {i}") for i in range(20)),
            *(post_line(client, editor, f"عاجل {i}", edition="ar") for i in range(3)),
        )
    await expect(page.locator("#en .line")).to_have_count(20)
    await expect(page.locator("#ar .line")).to_have_count(3)
    await expect(page.locator("#en [aria-live=polite]")).to_have_text("BREAKING: 20 new lines")
    await expect(page.locator("#ar [aria-live=polite]")).to_have_text("عاجل: أخبار جديدة: 3")
    await asyncio.sleep(1)
    announced = await page.evaluate("window.__announced")
    assert sorted(announced) == sorted(["BREAKING: 20 new lines", "عاجل: أخبار جديدة: 3"]), announced
    await one_connection(node)
