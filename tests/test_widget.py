"""The embeddable <flash-ticker> widget on a partner's page, in a real headless chromium."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser import browser, screenshot
from tests.conftest import Stack, post_line
from tests.partner import PartnerSite

pytestmark = pytest.mark.slow

# A host page that does its worst: resets everything, hides lists and buttons, recolours text.
HOSTILE_CSS = """
* { color: red !important; font-size: 40px !important; font-family: serif !important;
    animation: none !important; letter-spacing: 9px !important; direction: ltr !important; }
li, ul, button { display: none !important; }
.bar, .track, .line, .pause { display: none !important; visibility: hidden !important; }
flash-ticker { display: block !important; }
"""


def _items(page: Page, selector: str = "flash-ticker") -> object:
    return page.locator(f"{selector} .line")


async def _texts(page: Page, selector: str = "flash-ticker") -> list[str]:
    return await page.locator(f"{selector} .line .text").all_inner_texts()


async def _translate_x(page: Page) -> float:
    return float(
        await page.evaluate(
            "() => new DOMMatrix(getComputedStyle(document.querySelector('flash-ticker').shadowRoot"
            ".querySelector('.track')).transform).m41"
        )
    )


async def test_widget_on_hostile_page_shows_lines_safely_and_can_be_paused(
    stack: Stack, partner: PartnerSite
) -> None:
    """On a page with hostile CSS the widget shows a posted line within a second, unharmed; the
    pause control stops the motion; a line of HTML appears as text and runs nothing."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["en"])
    url = partner.page("hostile.html", '<flash-ticker edition="en"></flash-ticker>', node, HOSTILE_CSS)
    async with browser() as chromium:
        page = await chromium.new_page(viewport={"width": 1000, "height": 400})
        dialogs: list[str] = []
        page.on(
            "dialog", lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.dismiss()))
        )
        await page.goto(url)
        ticker = page.locator("flash-ticker")
        await expect(ticker).to_have_attribute("data-transport", "ws")
        await expect(ticker.locator(".empty")).to_be_attached()
        async with httpx.AsyncClient(base_url=node.url) as client:
            started = asyncio.get_running_loop().time()
            await post_line(client, editor, "Polls close across the country", urgency="urgent")
            await expect(ticker.locator(".line .text")).to_have_text(
                ["Polls close across the country"], timeout=1000
            )
            assert asyncio.get_running_loop().time() - started < 1.0
            line = ticker.locator(".line").first
            await expect(line).to_be_visible()
            style = await line.evaluate(
                "e => { const s = getComputedStyle(e);"
                " return [s.color, s.fontSize, s.fontFamily, s.letterSpacing]; }"
            )
            assert style[0] != "rgb(255, 0, 0)" and style[1] != "40px" and style[3] != "9px", style
            # The host page's styles stay out, and ours stay in.
            assert (
                await page.evaluate("getComputedStyle(document.querySelector('h1')).color")
                == "rgb(255, 0, 0)"
            )
            # The text moves...
            first = await _translate_x(page)
            await asyncio.sleep(0.4)
            assert await _translate_x(page) != first
            # ...until the visible pause control (no hover needed) stops it.
            pause = ticker.get_by_role("button", name="Pause the news ticker")
            await expect(pause).to_be_visible()
            await pause.focus()
            await page.keyboard.press("Enter")
            await expect(ticker.get_by_role("button", name="Play the news ticker")).to_have_attribute(
                "aria-pressed", "true"
            )
            await asyncio.sleep(0.1)
            held = await _translate_x(page)
            await asyncio.sleep(0.5)
            assert abs(await _translate_x(page) - held) < 0.5
            # A live region announces new lines politely.
            hostile_text = "<img src=x onerror=alert(1)>"
            await post_line(client, editor, hostile_text)
            await expect(ticker.locator(".line .text").first).to_have_text(hostile_text)
            await expect(ticker.locator("[aria-live=polite]")).to_have_text(f"BREAKING: {hostile_text}")
            assert await ticker.locator(".line img").count() == 0
            await asyncio.sleep(0.3)
            assert dialogs == []
            await screenshot(page, "widget-hostile.png")


async def test_widget_right_to_left_and_reduced_motion(stack: Stack, partner: PartnerSite) -> None:
    """The Arabic edition runs right-to-left (moving rightwards); reduced-motion readers get a still bar."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["ar"])
    url = partner.page("ar.html", '<flash-ticker edition="ar"></flash-ticker>', node)
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "عاجل: انقطاع الكهرباء في العاصمة", edition="ar", urgency="flash")
    async with browser() as chromium:
        page = await chromium.new_page()
        await page.goto(url)
        ticker = page.locator("flash-ticker")
        await expect(ticker.locator(".line .text")).to_have_text(["عاجل: انقطاع الكهرباء في العاصمة"])
        bar = ticker.locator(".bar")
        await expect(bar).to_have_attribute("dir", "rtl")
        assert await bar.evaluate("e => getComputedStyle(e).direction") == "rtl"
        assert await ticker.locator(".label").inner_text() == "عاجل"
        first = await _translate_x(page)
        await asyncio.sleep(0.4)
        assert await _translate_x(page) > first, "right-to-left text moves to the right"
        await screenshot(page, "widget-arabic.png")
        still = await chromium.new_page(reduced_motion="reduce")
        await still.goto(url)
        await expect(still.locator("flash-ticker .line")).to_have_count(1)
        await expect(still.locator("flash-ticker .bar")).to_have_class("bar still")
        assert await _translate_x(still) == 0
        await expect(still.locator("flash-ticker .pause")).to_be_hidden()


async def test_widget_resumes_after_service_restart_with_every_missed_line_once(
    stack: Stack, partner: PartnerSite
) -> None:
    """Lines posted while the widget's node restarts appear once each, in order, when it returns."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    other = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["en"])
    url = partner.page("restart.html", '<flash-ticker edition="en"></flash-ticker>', node)
    async with browser() as chromium:
        page = await chromium.new_page()
        await page.goto(url)
        ticker = page.locator("flash-ticker")
        async with httpx.AsyncClient(base_url=other.url) as client:
            await post_line(client, editor, "before")
            await expect(ticker.locator(".line .text")).to_have_text(["before"])
            node.terminate()
            for i in range(5):
                await post_line(client, editor, f"during {i}")
                await asyncio.sleep(0.01)
            node.start()
            node.wait_ready()
            expected = [f"during {i}" for i in reversed(range(5))] + ["before"]
            await expect(ticker.locator(".line .text")).to_have_text(expected, timeout=20_000)
            await post_line(client, editor, "after")
            await expect(ticker.locator(".line .text")).to_have_text(["after", *expected])
            # An outage is not a blocked transport: the widget stays on WebSocket.
            await expect(ticker).to_have_attribute("data-transport", "ws")


@pytest.mark.parametrize(("blocked", "transport"), [("WebSocket", "sse"), ("WebSocket EventSource", "poll")])
async def test_widget_falls_back_to_sse_then_to_the_feed(
    stack: Stack, partner: PartnerSite, blocked: str, transport: str
) -> None:
    """Without WebSocket the widget uses SSE; without SSE too, it polls the JSON feed."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    chief = await stack.token("chief", ["en"])
    url = partner.page(
        "fallback.html",
        '<flash-ticker id="all" edition="en" poll-interval="1"></flash-ticker>'
        '<flash-ticker id="sports" edition="en" topics="sports" poll-interval="1"></flash-ticker>',
        node,
    )
    async with browser() as chromium:
        page = await chromium.new_page()
        await page.add_init_script("".join(f"delete window.{name};" for name in blocked.split()))
        await page.goto(url)
        ticker = page.locator("#all")
        await expect(ticker).to_have_attribute("data-transport", transport)
        async with httpx.AsyncClient(base_url=node.url) as client:
            first = await post_line(client, chief, "first via fallback", topics=["politics"])
            await post_line(client, chief, "match report", topics=["sports"])
            await expect(page.locator("#sports .line .text")).to_have_text(["match report"], timeout=5000)
            await expect(ticker.locator(".line .text")).to_have_text(["match report", "first via fallback"])
            await client.post(
                f"/api/v1/lines/{first['id']}/corrections",
                json={"text": "first via fallback, corrected"},
                headers={"Authorization": f"Bearer {chief}"},
            )
            await expect(ticker.locator(".line .text")).to_have_text(
                ["match report", "first via fallback, corrected"], timeout=5000
            )
            await expect(ticker.locator(".corrected")).to_have_count(1)
            await client.post(
                f"/api/v1/lines/{first['id']}/retraction", headers={"Authorization": f"Bearer {chief}"}
            )
            await expect(ticker.locator(".line .text")).to_have_text(["match report"], timeout=5000)
            await expect(page.locator("#sports .line .text")).to_have_text(["match report"])
