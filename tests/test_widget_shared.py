"""Many widgets on one page share one connection (issue 11, finding 14).

Five tickers on one page opened five connections; on SSE (WebSocket blocked) the seventh never
rendered and the host page's own requests to the same host stalled, HTTP/1.1 allowing six
connections per host. Now a page's widgets of one server share one subscription, the union of their
filters, and each applies its own filter (docs/widget.md, "Many widgets, one connection"). Checked in
a real headless chromium on a partner page against a real node and worker, with the node's own count
of open readers.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import Stack, auth, post_line
from tests.partner import PartnerSite
from tests.widget_checks import ANNOUNCEMENTS, connections, holds, one_connection

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}


async def _states(page: Page) -> dict[str, tuple[str | None, str | None]]:
    """Each ticker's (data-state, data-error), by id."""
    states: dict[str, list[str | None]] = await page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('flash-ticker')]"
        ".map((t) => [t.id, [t.dataset.state || null, t.dataset.error || null]]))"
    )
    return {ticker: (state, error) for ticker, (state, error) in states.items()}


async def test_five_tickers_share_one_connection_and_each_keeps_its_own_filter(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """An Arabic partner page on a phone with five tickers (three editions, a topic filter, an
    urgency filter, one naming the server in capitals with a trailing slash) holds one
    connection; each ticker shows exactly its own lines, a correction that takes a line out of one
    ticker's filter leaves the others' as they are, a line shown by two tickers is announced once,
    and tickers added or removed later keep the page on one connection (none once the last is gone)."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, FLASHWIRE_HEARTBEAT_S="1")
    chief = await stack.token("chief", ["en", "ar", "es"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, chief, "حريق في الميناء", edition="ar", urgency="urgent")
        await post_line(client, chief, "عاجل جدا: زلزال", edition="ar", urgency="flash")
        await stack.until_applied()
        body = (
            '<flash-ticker id=ar edition="ar"></flash-ticker>'
            '<flash-ticker id=ar-flash edition="ar" min-urgency="flash"></flash-ticker>'
            '<flash-ticker id=en edition="en"></flash-ticker>'
            '<flash-ticker id=en-sports edition="en" topics="sports"></flash-ticker>'
            '<flash-ticker id=es edition="es" server="{server}/"></flash-ticker>'
        ).format(server=node.url.replace("http://", "HTTP://"))
        page = await chromium.new_page(viewport=PHONE)
        await page.goto(partner.page("five.html", body, node, lang="ar"))
        await expect(page.locator("#ar .line .text")).to_have_text(["عاجل جدا: زلزال", "حريق في الميناء"])
        await expect(page.locator("#ar-flash .line .text")).to_have_text(["عاجل جدا: زلزال"])
        await one_connection(node)
        for ticker in ("ar", "ar-flash", "en", "en-sports", "es"):
            await expect(page.locator(f"#{ticker}")).to_have_attribute("data-state", "live")

        await page.evaluate(ANNOUNCEMENTS)
        match = await post_line(client, chief, "Cup final tonight", topics=["sports"])
        await expect(page.locator("#en .line .text")).to_have_text(["Cup final tonight"])
        await expect(page.locator("#en-sports .line .text")).to_have_text(["Cup final tonight"])
        # Shown by two tickers, heard once (by the first ticker that shows it).
        await page.wait_for_function("() => window.__announced.length >= 1")
        await asyncio.sleep(1.0)
        assert await page.evaluate("window.__announced") == ["BREAKING: Cup final tonight"]
        await post_line(client, chief, "Parliament votes", topics=["politics"])
        await post_line(client, chief, "Sesión de urgencia", edition="es")
        await expect(page.locator("#en .line .text")).to_have_text(["Parliament votes", "Cup final tonight"])
        await expect(page.locator("#es .line .text")).to_have_text(["Sesión de urgencia"])
        await expect(page.locator("#en-sports .line .text")).to_have_text(["Cup final tonight"])
        await expect(page.locator("#ar-flash .line .text")).to_have_text(["عاجل جدا: زلزال"])

        # A correction moves the match out of sports: gone from the sports ticker only.
        moved = await client.post(
            f"/api/v1/lines/{match['id']}/corrections",
            json={"text": "Cup final tonight", "topics": ["politics"]},
            headers=auth(chief),
        )
        assert moved.status_code == 201, moved.text
        await expect(page.locator("#en-sports .line")).to_have_count(0)
        await expect(page.locator("#en-sports .empty")).to_have_text("No breaking news")
        await expect(page.locator("#en .line .text")).to_have_text(["Parliament votes", "Cup final tonight"])

        # Tickers come and go: a Spanish urgent-only one added, both Arabic ones removed.
        await page.evaluate(
            "() => { document.querySelector('#ar').remove(); document.querySelector('#ar-flash').remove();"
            " document.body.insertAdjacentHTML('beforeend',"
            " '<flash-ticker id=es-urgent edition=es min-urgency=urgent></flash-ticker>'); }"
        )
        await post_line(client, chief, "Alerta sísmica", edition="es", urgency="urgent")
        await expect(page.locator("#es-urgent .line .text")).to_have_text(["Alerta sísmica"])
        await expect(page.locator("#es .line .text")).to_have_text(["Alerta sísmica", "Sesión de urgencia"])
        await one_connection(node)
        await page.evaluate("() => document.querySelectorAll('flash-ticker').forEach((t) => t.remove())")
        await holds(node, 0)


async def test_seven_tickers_over_sse_all_render_and_leave_the_host_pages_requests_free(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """On a desktop page whose Content-Security-Policy blocks WebSocket, seven tickers fall back to
    SSE on one connection: all seven render and are live at once (seven streams would take more
    than the six connections per host a browser allows over HTTP/1.1, and two of them would go on
    waiting and retrying), and six requests the host page makes to the same host at once are all
    answered."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, FLASHWIRE_HEARTBEAT_S="1")
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "Storm warning", topics=["environment"])
        await stack.until_applied()
    csp = f'<meta http-equiv="Content-Security-Policy" content="connect-src {node.url}">'
    body = "".join(f'<flash-ticker id=t{i} edition="en"></flash-ticker>' for i in range(7))
    page = await chromium.new_page(viewport=DESKTOP)
    await page.goto(partner.page("seven.html", body, node, head=csp))
    for i in range(7):
        await expect(page.locator(f"#t{i}")).to_have_attribute("data-transport", "sse", timeout=10_000)
        await expect(page.locator(f"#t{i} .line .text")).to_have_text(["Storm warning"])
    await one_connection(node)
    states = await page.evaluate(
        "() => [...document.querySelectorAll('flash-ticker')].map((t) => t.dataset.state)"
    )
    assert states == ["live"] * 7, states
    statuses = await page.evaluate(
        """async (server) => {
          const ask = () => fetch(`${server}/feeds/en.json`, { cache: "no-store" }).then((r) => r.status);
          const timeout = new Promise((resolve) => setTimeout(() => resolve("stalled"), 5000));
          return Promise.race([Promise.all([0, 1, 2, 3, 4, 5].map(ask)), timeout]);
        }""",
        node.url,
    )
    assert statuses == [200] * 6, statuses


async def test_a_refused_ticker_stops_alone(stack: Stack, partner: PartnerSite, chromium: Browser) -> None:
    """Among three tickers, one with an unknown topic and one with an invalid urgency are refused
    (data-error names the field); the third keeps the ticker live on the page's one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, FLASHWIRE_HEARTBEAT_S="1")
    editor = await stack.token("editor", ["en"])
    body = (
        '<flash-ticker id=weather edition="en" topics="weather"></flash-ticker>'
        '<flash-ticker id=good edition="en"></flash-ticker>'
        '<flash-ticker id=loud edition="en" min-urgency="loud"></flash-ticker>'
    )
    page = await chromium.new_page(viewport=DESKTOP)
    await page.goto(partner.page("refused.html", body, node))
    await expect(page.locator("#weather")).to_have_attribute("data-error", "topics: unknown topic 'weather'")
    await expect(page.locator("#loud")).to_have_attribute(
        "data-error", "min_urgency: must be one of flash, urgent, routine"
    )
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "Still live")
    await expect(page.locator("#good .line .text")).to_have_text(["Still live"])
    assert await page.locator("#good").get_attribute("data-error") is None
    await one_connection(node)
    assert await connections(node) == 1


async def test_on_a_page_that_blocks_websocket_an_unknown_edition_or_topic_stops_only_its_ticker(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """On a partner page whose Content-Security-Policy blocks WebSocket, a ticker of an unknown
    edition (sorted first) and one of an unknown topic are refused alone (the refusals of /sse are
    readable there); the third goes on over SSE with its lines."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, FLASHWIRE_HEARTBEAT_S="1")
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "Cup final tonight", topics=["sports"])
        await stack.until_applied()
    csp = f'<meta http-equiv="Content-Security-Policy" content="connect-src {node.url}">'
    body = (
        '<flash-ticker id=aa edition="aa"></flash-ticker>'
        '<flash-ticker id=weather edition="en" topics="weather"></flash-ticker>'
        '<flash-ticker id=sports edition="en" topics="sports"></flash-ticker>'
    )
    page = await chromium.new_page(viewport=DESKTOP)
    await page.goto(partner.page("blocked.html", body, node, head=csp))
    await expect(page.locator("#sports .line .text")).to_have_text(["Cup final tonight"], timeout=15_000)
    await expect(page.locator("#sports")).to_have_attribute("data-transport", "sse")
    assert await _states(page) == {
        "aa": ("stopped", "editions: unknown edition 'aa'"),
        "weather": ("stopped", "topics: unknown topic 'weather'"),
        "sports": ("live", None),
    }
    await one_connection(node)


async def test_polling_an_unknown_edition_stops_only_its_ticker(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """In a browser with neither WebSocket nor EventSource, a ticker of an unknown edition is
    refused alone (its feed is not there) and the other polls its edition's feed."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "Storm warning")
        await stack.until_applied()
        body = (
            '<flash-ticker id=aa edition="aa" poll-interval="1"></flash-ticker>'
            '<flash-ticker id=en edition="en" poll-interval="1"></flash-ticker>'
        )
        page = await chromium.new_page(viewport=DESKTOP)
        await page.add_init_script("delete window.WebSocket; delete window.EventSource;")
        await page.goto(partner.page("poll.html", body, node))
        await expect(page.locator("#en .line .text")).to_have_text(["Storm warning"])
        await expect(page.locator("#aa")).to_have_attribute("data-error", "editions: unknown edition 'aa'")
        await post_line(client, editor, "Still polled")
        await expect(page.locator("#en .line .text")).to_have_text(["Still polled", "Storm warning"])
        assert (await _states(page))["en"] == ("polling", None)


async def test_a_ticker_joining_leaves_the_others_loop_where_it_was(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A ticker added to the page (another edition: the page reconnects) does not start another
    ticker's loop again (docs/widget.md, "Motion")."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        for i in range(4):
            await post_line(client, editor, f"A long headline number {i} about the storm coming to the coast")
        await stack.until_applied()
    page = await chromium.new_page(viewport=DESKTOP)
    await page.goto(
        partner.page("motion.html", '<flash-ticker id=a edition="en" speed="40"></flash-ticker>', node)
    )
    await expect(page.locator("#a .line")).to_have_count(4)
    position = (
        "() => document.querySelector('#a').shadowRoot.querySelector('.track').getAnimations()[0].currentTime"
    )
    await page.wait_for_function(f"() => ({position})() > 1500")
    before = await page.evaluate(position)
    await page.evaluate(
        "() => document.body.insertAdjacentHTML('beforeend', '<flash-ticker id=b edition=es></flash-ticker>')"
    )
    await expect(page.locator("#b")).to_have_attribute("data-state", "live")
    await expect(page.locator("#b .empty")).to_be_visible()
    # Started again, the loop would be back near 0 ms; kept, it is where it was or further (the
    # animation is made anew at the same place, so equal up to floating-point noise).
    assert await page.evaluate(position) >= before - 1, before
    await one_connection(node)


async def test_a_page_refused_as_a_whole_keeps_every_ticker_refused(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """On a page whose origin the node does not allow (4403), every ticker shows the refusal; one
    changed without changing the page's subscription, and one added, show it too."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS="https://elsewhere.example")
    body = (
        '<flash-ticker id=a edition="en"></flash-ticker>'
        '<flash-ticker id=b edition="en" min-urgency="flash"></flash-ticker>'
    )
    page = await chromium.new_page(viewport=DESKTOP)
    await page.goto(partner.page("refused-page.html", body, node))
    refusal = f"origin not allowed: {partner.origin}"
    await expect(page.locator("#b")).to_have_attribute("data-error", refusal)
    await page.evaluate(
        "() => { document.body.insertAdjacentHTML('beforeend',"
        " '<flash-ticker id=c edition=en></flash-ticker>');"
        " document.querySelector('#b').setAttribute('min-urgency', 'urgent'); }"
    )
    for ticker in ("a", "b", "c"):
        await expect(page.locator(f"#{ticker}")).to_have_attribute("data-error", refusal)
        await expect(page.locator(f"#{ticker}")).to_have_attribute("data-state", "stopped")
    assert await connections(node) == 0


async def test_a_resumed_page_is_live_once_the_server_confirms_not_at_the_next_heartbeat(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A ticker of a quiet edition taken out of the page and put back resumes from its cursor (no
    event follows it); it is live as soon as the server confirms the subscription, not at the next
    heartbeat."""
    stack.worker()
    # Heartbeats every 60 s: a page waiting for one would stay "connecting" for up to a minute.
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, FLASHWIRE_HEARTBEAT_S="60")
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "A quiet night")
        await stack.until_applied()
    page = await chromium.new_page(viewport=DESKTOP)
    await page.goto(partner.page("quiet.html", '<flash-ticker id=quiet edition="en"></flash-ticker>', node))
    ticker = page.locator("#quiet")
    await expect(ticker.locator(".line .text")).to_have_text(["A quiet night"])
    await expect(ticker).to_have_attribute("data-state", "live")
    await page.evaluate(
        "() => { window.__ticker = document.querySelector('#quiet'); window.__ticker.remove(); }"
    )
    await expect(ticker).to_have_count(0)
    await holds(node, 0)
    await page.evaluate("() => document.body.append(window.__ticker)")
    await expect(ticker).to_have_attribute("data-state", "live", timeout=5000)
    await expect(ticker.locator(".line .text")).to_have_text(["A quiet night"])
    await one_connection(node)
