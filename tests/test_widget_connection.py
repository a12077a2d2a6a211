"""The <flash-ticker> widget's connection handling under faults (issue 11, findings 13 and 16 to 19).

A partner page on another origin, in a real headless chromium, against a real node and worker,
often through tests/proxy.py (which answers chosen requests with 502/503, resets connections, and
lists the open streams). After each fault the node's own count of open readers
(`flashwire_connections` on /metrics) shows one page holding exactly one connection. The node runs
with a 1 s heartbeat, so the dead-connection rule (2.5 heartbeats) trips within seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import browser
from tests.conftest import ServiceNode, Stack, eventually, post_line
from tests.partner import PartnerSite
from tests.proxy import CuttingProxy
from tests.widget_checks import connections, one_connection

pytestmark = pytest.mark.slow

HEARTBEAT = {"FLASHWIRE_HEARTBEAT_S": "1"}

# Every change of the widget's polite live region, in order (its text after the change).
ANNOUNCEMENTS = """
() => {
  const live = document.querySelector("flash-ticker").shadowRoot.querySelector("[aria-live=polite]");
  window.__announced = [];
  new MutationObserver(() => window.__announced.push(live.textContent))
    .observe(live, { childList: true, characterData: true, subtree: true });
}
"""


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with browser() as launched:
        yield launched


def _page(partner: PartnerSite, node: ServiceNode, name: str, widget: str, head: str = "") -> str:
    """A partner page (its own origin) loading ticker.js from `node`, with `widget` in its body."""
    (partner.root / name).write_text(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Partner</title>{head}'
        f'<script src="{node.url}/web/ticker.js" defer></script></head>'
        f"<body><h1>Partner news site</h1><div id=a>{widget}</div><div id=b></div></body></html>"
    )
    return f"{partner.origin}/{name}"


async def _proxy(node: ServiceNode) -> CuttingProxy:
    return await CuttingProxy(node.port).start()


async def _texts(page: Page) -> list[str]:
    return await page.locator("flash-ticker .line .text").all_inner_texts()


async def test_freeze_and_resume_leaves_one_connection(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A tab frozen for 5 s (longer than the dead-connection rule's 2.5 s) and resumed, through
    Chromium's lifecycle API, shows the line posted meanwhile once and holds one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en"])
    page = await chromium.new_page()
    await page.goto(_page(partner, node, "freeze.html", '<flash-ticker edition="en"></flash-ticker>'))
    ticker = page.locator("flash-ticker")
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "before the freeze")
        await expect(ticker.locator(".line .text")).to_have_text(["before the freeze"])
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
        await post_line(client, editor, "during the freeze")
        await asyncio.sleep(5)
        await cdp.send("Page.setWebLifecycleState", {"state": "active"})
        await expect(ticker.locator(".line .text")).to_have_text(["during the freeze", "before the freeze"])
        await one_connection(node)
        await post_line(client, editor, "after the freeze")
        await expect(ticker.locator(".line .text")).to_have_text(
            ["after the freeze", "during the freeze", "before the freeze"]
        )
        await expect(ticker).to_have_attribute("data-transport", "ws")
        await one_connection(node)


async def test_outage_shows_reconnecting_then_recovers_on_one_connection(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """While the node cannot be reached (every connection reset) the bar says it is reconnecting,
    announced once; when it can be reached again the widget is back on WebSocket, with the line
    posted meanwhile once, on one connection, and the notice gone."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en"])
    proxy = await _proxy(node)
    try:
        page = await chromium.new_page()
        widget = f'<flash-ticker edition="en" server="{proxy.url}"></flash-ticker>'
        await page.goto(_page(partner, node, "outage.html", widget))
        ticker = page.locator("flash-ticker")
        async with httpx.AsyncClient(base_url=node.url) as client:
            await post_line(client, editor, "before the outage")
            await expect(ticker.locator(".line .text")).to_have_text(["before the outage"])
            await page.evaluate(ANNOUNCEMENTS)
            proxy.resetting = True
            proxy.reset_all()
            status = ticker.locator(".status")
            await expect(status).to_have_text("Reconnecting…", timeout=10_000)
            await expect(status).to_be_visible()
            await post_line(client, editor, "during the outage")
            await asyncio.sleep(3)
            proxy.resetting = False
            await expect(ticker.locator(".line .text")).to_have_text(
                ["during the outage", "before the outage"], timeout=20_000
            )
            await expect(status).to_be_hidden()
            await expect(ticker).to_have_attribute("data-transport", "ws")
            await one_connection(node, proxy)
            announced = await page.evaluate("window.__announced")
            assert announced.count("Reconnecting…") == 1, announced
    finally:
        await proxy.stop()


async def test_websocket_blocked_by_csp_falls_back_to_sse(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A page whose Content-Security-Policy allows the server over http but not ws: (Chromium fires
    only `error` for the blocked WebSocket) gets the ticker over SSE within seconds, on one
    connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en"])
    csp = f'<meta http-equiv="Content-Security-Policy" content="connect-src {node.url}">'
    page = await chromium.new_page()
    await page.goto(_page(partner, node, "csp.html", '<flash-ticker edition="en"></flash-ticker>', csp))
    ticker = page.locator("flash-ticker")
    await expect(ticker).to_have_attribute("data-transport", "sse", timeout=5000)
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "over server-sent events")
        await expect(ticker.locator(".line .text")).to_have_text(["over server-sent events"], timeout=5000)
    await one_connection(node)


async def test_after_503s_the_widget_returns_to_websocket(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A proxy answering 503 to every WebSocket upgrade and every /sse request (the feed still
    served) drives the widget down to the feed; once the proxy serves again the widget probes back
    and returns to WebSocket, on one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en"])
    proxy = await _proxy(node)
    try:
        proxy.answer = lambda line, upgrade: 503 if upgrade or " /sse" in line else None
        page = await chromium.new_page()
        widget = f'<flash-ticker edition="en" server="{proxy.url}" poll-interval="1"></flash-ticker>'
        await page.goto(_page(partner, node, "503.html", widget))
        ticker = page.locator("flash-ticker")
        await expect(ticker).to_have_attribute("data-transport", "poll", timeout=15_000)
        proxy.answer = None
        await expect(ticker).to_have_attribute("data-transport", "ws", timeout=20_000)
        async with httpx.AsyncClient(base_url=node.url) as client:
            await post_line(client, editor, "back on WebSocket")
            await expect(ticker.locator(".line .text")).to_have_text(["back on WebSocket"], timeout=3000)
        await expect(ticker).to_have_attribute("data-transport", "ws")
        await one_connection(node, proxy)
    finally:
        await proxy.stop()


async def test_offline_then_online(stack: Stack, partner: PartnerSite, chromium: Browser) -> None:
    """`offline` shows the offline state at once (in the edition's language) and drops the
    connection; `online` reconnects at once, with the line posted meanwhile, on one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["es"])
    page = await chromium.new_page()
    await page.goto(_page(partner, node, "offline.html", '<flash-ticker edition="es"></flash-ticker>'))
    ticker = page.locator("flash-ticker")
    await expect(ticker).to_have_attribute("data-transport", "ws")
    await one_connection(node)
    await page.context.set_offline(True)
    await expect(ticker.locator(".status")).to_have_text("Sin conexión", timeout=1000)
    await expect(ticker.locator("[aria-live=polite]")).to_have_text("Sin conexión")
    await eventually(lambda: _zero(node))
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "mientras tanto", edition="es")
    await asyncio.sleep(3)
    await page.context.set_offline(False)
    await expect(ticker.locator(".line .text")).to_have_text(["mientras tanto"], timeout=2000)
    await expect(ticker.locator(".status")).to_be_hidden()
    await one_connection(node)


async def _zero(node: ServiceNode) -> bool:
    return await connections(node) == 0


async def test_attribute_change_while_detached_starts_a_fresh_subscription(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """An element moved out of the page, switched from en to es and put back shows the Spanish
    lines only, subscribed without the English cursor, on one connection."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en", "es"])
    proxy = await _proxy(node)
    try:
        page = await chromium.new_page()
        widget = f'<flash-ticker edition="en" server="{proxy.url}"></flash-ticker>'
        await page.goto(_page(partner, node, "detached.html", widget))
        ticker = page.locator("flash-ticker")
        async with httpx.AsyncClient(base_url=node.url) as client:
            await post_line(client, editor, "English line")
            await post_line(client, editor, "Línea en español", edition="es")
            await expect(ticker.locator(".line .text")).to_have_text(["English line"])
            await page.evaluate(
                "() => { const t = document.querySelector('flash-ticker'); t.remove();"
                " t.setAttribute('edition', 'es'); window.__ticker = t; }"
            )
            await post_line(client, editor, "Otra línea", edition="es")
            await page.evaluate("() => document.querySelector('#b').append(window.__ticker)")
            await expect(ticker.locator(".line .text")).to_have_text(["Otra línea", "Línea en español"])
            await expect(ticker.locator(".label")).to_have_text("ÚLTIMA HORA")
            await post_line(client, editor, "En directo", edition="es")
            await expect(ticker.locator(".line .text")).to_have_text(
                ["En directo", "Otra línea", "Línea en español"]
            )
        last = [c.request_line for c in proxy.connections if " /ws" in c.request_line][-1]
        assert "editions=es" in last and "since" not in last, last
        await one_connection(node, proxy)
    finally:
        await proxy.stop()


async def test_a_corrected_filter_clears_data_error(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A refused filter (4400) sets data-error; correcting the attribute clears it and subscribes."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en"])
    page = await chromium.new_page()
    await page.goto(
        _page(partner, node, "error.html", '<flash-ticker edition="en" topics="weather"></flash-ticker>')
    )
    ticker = page.locator("flash-ticker")
    await expect(ticker).to_have_attribute("data-error", "topics: unknown topic 'weather'")
    await ticker.evaluate("t => t.setAttribute('topics', 'sports')")
    await expect(ticker).not_to_have_attribute("data-error", "topics: unknown topic 'weather'")
    assert await ticker.get_attribute("data-error") is None
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "match report", topics=["sports"])
        await expect(ticker.locator(".line .text")).to_have_text(["match report"])
    await one_connection(node)


async def test_a_burst_is_announced_once(stack: Stack, partner: PartnerSite, chromium: Browser) -> None:
    """20 lines posted at once change the polite live region once: "BREAKING: 20 new lines"."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, **HEARTBEAT)
    editor = await stack.token("editor", ["en"])
    page = await chromium.new_page()
    await page.goto(_page(partner, node, "burst.html", '<flash-ticker edition="en"></flash-ticker>'))
    ticker = page.locator("flash-ticker")
    await expect(ticker).to_have_attribute("data-transport", "ws")
    await one_connection(node)
    await page.evaluate(ANNOUNCEMENTS)
    async with httpx.AsyncClient(base_url=node.url) as client:
        await asyncio.gather(*(post_line(client, editor, f"burst {i}") for i in range(20)))
    await expect(ticker.locator(".line")).to_have_count(20)
    await expect(ticker.locator("[aria-live=polite]")).to_have_text("BREAKING: 20 new lines")
    await asyncio.sleep(1)
    assert await page.evaluate("window.__announced") == ["BREAKING: 20 new lines"]
