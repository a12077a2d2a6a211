"""The demo page at / (issue 11, finding 12): a made-up news site's article page in each edition with
the real <flash-ticker> under its header, and the unfiltered embed snippet a partner copies (finding 6),
in a real headless chromium against a real `flashwire serve` and worker."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, expect

from tests.browser import ARTIFACTS, screenshot
from tests.conftest import ROOT, Stack, post_line
from tests.partner import PartnerSite
from tests.test_security_headers import RECORD_VIOLATIONS

pytestmark = pytest.mark.slow

# On the module's event loop: one chromium for the module's browser tests (`chromium`, tests/conftest.py).
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1366, height=900)
# Live lines already on the tickers when the page opens (what the screenshots show beside the new one).
EARLIER = {
    "en": [
        ("Central bank holds interest rates at 4.25%", "urgent"),
        ("Magnitude 6.1 earthquake strikes off the northern coast", "flash"),
    ],
    "ar": [
        ("البنك المركزي يثبّت أسعار الفائدة عند 4.25%", "urgent"),
        ("زلزال بقوة 6.1 درجة يضرب قبالة الساحل الشمالي", "flash"),
    ],
    "es": [
        ("El banco central mantiene los tipos de interés en el 4,25 %", "urgent"),
        ("Un terremoto de magnitud 6,1 sacude la costa norte", "flash"),
    ],
}
# A line posted while each page is open.
LIVE = {
    ("en", 390): "Polls close in the northern provinces",
    ("en", 1366): "Storm warning issued for the east coast",
    ("ar", 390): "إغلاق مراكز الاقتراع في المحافظات الشمالية",
    ("ar", 1366): "تحذير من عاصفة على الساحل الشرقي",
    ("es", 1366): "Alerta por tormenta en la costa este",
}
# The docs screenshots (docs/demo*.png are copies of these, see the test's docstring).
SHOTS = {
    ("en", 1366): "demo.png",
    ("ar", 1366): "demo-ar.png",
    ("es", 1366): "demo-es.png",
    ("en", 390): "demo-phone.png",
    ("ar", 390): "demo-ar-phone.png",
}


def _watch(page: Page, problems: list[str]) -> None:
    """Collect console errors and uncaught exceptions of a page (but the 404 of the /favicon.ico chromium
    asks for by itself: the service has no icon)."""

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))


@ON_MODULE_LOOP
async def test_demo_page_is_an_article_page_with_the_live_ticker_under_its_header(
    stack: Stack, chromium: Browser
) -> None:
    """At 390 px and 1366 px, in English and Arabic (and Spanish at 1366 px): the page speaks the
    edition (lang, dir, a switcher marking it), has its landmarks and skip link, shows the ticker
    right under the site header and above the article, the ticker shows a line posted through the
    API while the page is open, nothing is wider than the window, and there is no console error or
    CSP violation. Keeps the SHOTS under test-artifacts/ (docs/demo*.png are copies)."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "ar", "es"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        for edition, lines in EARLIER.items():
            for text, urgency in lines:
                await post_line(client, editor, text, edition=edition, urgency=urgency, topics=["economy"])
        await stack.until_applied()
        posted: dict[str, list[str]] = {edition: [] for edition in EARLIER}
        for edition, width in LIVE:
            phone = width == PHONE["width"]
            viewport = PHONE if phone else DESKTOP
            # A phone's screen has two device pixels to a CSS pixel (sharper screenshots too).
            context = await chromium.new_context(viewport=viewport, device_scale_factor=2 if phone else 1)
            await context.add_init_script(RECORD_VIOLATIONS)
            page = await context.new_page()
            problems: list[str] = []
            _watch(page, problems)
            await page.goto(f"{node.url}/?edition={edition}")
            where = f"{edition} at {width} px"

            html = page.locator("html")
            await expect(html).to_have_attribute("lang", edition)
            await expect(html).to_have_attribute("dir", "rtl" if edition == "ar" else "ltr")
            current = page.locator("#editions a[aria-current=page]")
            await expect(current).to_have_attribute("data-edition", edition)
            for role in ("banner", "main", "contentinfo"):
                await expect(page.get_by_role(role)).to_have_count(1)
            await expect(page.get_by_role("navigation")).to_have_count(2)
            sections = page.get_by_role("navigation").nth(1)
            await expect(sections.get_by_role("link")).to_have_count(8)
            await expect(sections.locator("a[aria-current=page]")).to_have_attribute(
                "href", f"/?edition={edition}&section=environment"
            )
            await expect(page.get_by_role("heading", level=1)).to_have_count(1)
            await expect(page.locator("article h1")).not_to_be_empty()
            assert await page.locator("article .body p").count() >= 3, where
            await expect(page.locator(".read-next li")).to_have_count(4)
            await page.keyboard.press("Tab")
            skip = page.locator("a.skip")
            await expect(skip).to_be_focused()
            await expect(skip).to_be_in_viewport()

            ticker = page.locator("flash-ticker")
            await expect(ticker).to_have_count(1)
            await expect(ticker).to_have_attribute("edition", edition)
            await expect(ticker).to_have_attribute("data-transport", "ws")
            live = [text for text, _ in EARLIER[edition]] + posted[edition]
            await expect(ticker.locator(".line .text")).to_have_count(len(live))
            header = await page.get_by_role("banner").bounding_box()
            bar = await ticker.bounding_box()
            article = await page.locator("article").bounding_box()
            assert header and bar and article, where
            assert abs(bar["y"] - (header["y"] + header["height"])) <= 2, (where, header, bar)
            assert bar["y"] + bar["height"] <= article["y"], (where, bar, article)
            assert bar["y"] < viewport["height"] / 2, (where, bar)

            text = LIVE[edition, width]
            await post_line(client, editor, text, edition=edition, urgency="routine")
            posted[edition].append(text)
            await expect(ticker.locator(".line .text").filter(has_text=text)).to_have_count(1)

            widths = await page.evaluate(
                "() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"
            )
            assert max(widths[:2]) <= widths[2], (where, widths)
            problems += await page.evaluate("window.__violations")
            assert problems == [], (where, problems)
            if (edition, width) in SHOTS:
                await ticker.locator(".pause").click()
                if phone:  # what a phone shows first: the header, the ticker, the headline
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / SHOTS[edition, width]))
                else:
                    await screenshot(page, SHOTS[edition, width])
            await context.close()


@ON_MODULE_LOOP
async def test_demo_snippet_is_unfiltered_copies_and_works_on_a_partner_page(
    stack: Stack,
    partner: PartnerSite,
    chromium: Browser,
) -> None:
    """The snippet shown for an edition has no filter (finding 6: the filtered one showed a partner
    nothing most of the day); the copy button puts exactly it on the clipboard; pasted into a page on
    another origin it shows the edition's lines, a routine untagged one included; the filtered form is
    offered underneath."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "es"])
    context = await chromium.new_context(viewport=PHONE)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=node.url)
    page = await context.new_page()
    problems: list[str] = []
    _watch(page, problems)
    for edition in ("en", "es"):
        await page.goto(f"{node.url}/?edition={edition}")
        snippet = await page.locator("#snippet").inner_text()
        assert snippet == (
            f'<script src="{node.url}/web/ticker.js" defer></script>\n'
            f'<flash-ticker edition="{edition}"></flash-ticker>'
        )
        await page.get_by_role("button", name="Copy snippet", exact=True).click()
        await expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
        assert await page.evaluate("navigator.clipboard.readText()") == snippet
        await expect(page.locator("#snippet-filtered")).to_be_hidden()
        await page.get_by_text("Only some lines?").click()
        filtered = page.locator("#snippet-filtered")
        await expect(filtered).to_be_visible()
        await expect(filtered).to_contain_text(f'edition="{edition}" topics="')
        await expect(filtered).to_contain_text('min-urgency="urgent"')
        await expect(page.locator("#cli-hint")).to_have_text(
            f".venv/bin/flashwire post --edition {edition} --urgency flash 'Your first breaking line'"
        )
        assert problems == []

        # Pasted as is into a partner's page on another origin (the script's src names the server).
        body, head = snippet.split("\n")[1], snippet.split("\n")[0]
        (partner.root / f"{edition}.html").write_text(
            f'<!doctype html><html lang="{edition}"><head><meta charset="utf-8"><title>Partner</title>'
            f"{head}</head><body><h1>Partner news site</h1>{body}</body></html>"
        )
        other = await context.new_page()
        _watch(other, problems)
        await other.goto(f"{partner.origin}/{edition}.html")
        widget = other.locator("flash-ticker")
        await expect(widget).to_have_attribute("data-transport", "ws")
        text = f"Routine untagged line for {edition} partners"
        async with httpx.AsyncClient(base_url=node.url) as client:
            await post_line(client, editor, text, edition=edition, urgency="routine")
        await expect(widget.locator(".line .text").filter(has_text=text)).to_have_count(1)
        await other.close()
    assert problems == []


def test_docs_screenshots_are_the_demo_pages() -> None:
    """README.md shows the screenshots the browser test keeps (copy them from test-artifacts/)."""
    readme = (ROOT / "README.md").read_text()
    for name in SHOTS.values():
        assert (ROOT / "docs" / name).is_file(), name
        assert f"docs/{name}" in readme, name
