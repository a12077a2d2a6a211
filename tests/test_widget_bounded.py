"""The <flash-ticker> widget on a busy day (issue 11, finding 15): a bounded set of lines, rendered in
time independent of how many lines are live, with a relative time on each line and an honest
empty state. A partner page on its own origin, in a real headless chromium, against a real node
and worker; the lines are posted through the API."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser import browser
from tests.conftest import Stack, auth, post_line
from tests.partner import PartnerSite

pytestmark = pytest.mark.slow

LIVE_LINES = 2000

# Before the page's scripts: every long task of the page, and the time each WebSocket message takes
# to handle, with the layout it leaves to do (forced at once), per edition.
PROBES = """
window.__longtasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longtasks.push(entry.duration);
}).observe({ type: "longtask" });
window.__handled = [];
const property = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
Object.defineProperty(WebSocket.prototype, "onmessage", {
  configurable: true,
  get() { return property.get.call(this); },
  set(handler) {
    property.set.call(this, (event) => {
      // One connection carries every edition of the page (the widgets share it): read the event's.
      const named = /"edition":"([^"]+)"/.exec(event.data);
      const edition = named && named[1];
      const started = performance.now();
      handler(event);
      void document.body.offsetHeight;
      const ms = performance.now() - started;
      const type = /"type":"([a-z]+)"/.exec(event.data.slice(0, 40));
      window.__handled.push({ edition, ms, type: type && type[1] });
    });
  },
});
"""


async def _post_many(client: httpx.AsyncClient, token: str, count: int, prefix: str) -> list[str]:
    """Post `count` lines, 32 at a time; their ids in the order posted."""
    ids: list[str] = []
    for first in range(0, count, 32):
        batch = range(first, min(first + 32, count))
        posted = await asyncio.gather(*(post_line(client, token, f"{prefix} {i}") for i in batch))
        ids.extend(line["id"] for line in posted)
    return ids


async def _insert(page: Page, html: str) -> None:
    await page.evaluate("html => document.body.insertAdjacentHTML('beforeend', html)", html)


async def _shadow(page: Page, selector: str, script: str) -> Any:
    return await page.evaluate(
        f"() => {{ const root = document.querySelector({selector!r}).shadowRoot; return {script}; }}"
    )


@pytest.mark.load
async def test_a_ticker_of_2000_live_lines_shows_a_bounded_set_and_renders_in_constant_time(
    stack: Stack, partner: PartnerSite
) -> None:
    """With 2,000 live lines the shadow root holds 20 line items (the default max-lines), the pinned
    line first; one new line costs at most a few times what it costs a 10-line ticker on the same
    page; the host page sees no long task (over 50 ms) from the busy ticker's arrival on, its
    snapshot included."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin, FLASHWIRE_SNAPSHOT_MAX_LINES="5000")
    chief = await stack.token("chief", ["en", "es"])
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        ids = await _post_many(client, chief, LIVE_LINES, "busy")
        pinned = await client.post(f"/api/v1/lines/{ids[0]}/pin", headers=auth(chief))
        assert pinned.status_code == 201, pinned.text
        for i in range(10):
            await post_line(client, chief, f"quiet {i}", edition="es")
        await stack.until_applied(timeout_s=60)
        partner_url = partner.page("busy.html", "", node)
        async with browser() as chromium:
            page = await chromium.new_page(viewport={"width": 1200, "height": 400})
            await page.add_init_script(PROBES)
            await page.goto(partner_url)
            await page.wait_for_function("() => Boolean(customElements.get('flash-ticker'))")
            # The 10-line ticker first: it pays the page's first layout of the bar (fonts, Intl).
            await _insert(page, "<flash-ticker id=quiet edition=es></flash-ticker>")
            await expect(page.locator("#quiet .line")).to_have_count(10)
            await page.evaluate("() => { window.__longtasks = []; }")
            await _insert(page, "<flash-ticker id=busy edition=en></flash-ticker>")
            busy = page.locator("#busy")
            await expect(busy.locator(".line")).to_have_count(20, timeout=20_000)
            await expect(busy.locator(".line .text").first).to_have_text("busy 0")
            # The order of the service's snapshot (docs/protocol.md: pinned first, then newest).
            listed = await client.get("/api/v1/editions/en/lines", headers=auth(chief))
            first_20 = [line["text"] for line in listed.json()["lines"][:20]]
            assert len(listed.json()["lines"]) == LIVE_LINES and first_20[0] == "busy 0"
            await expect(busy.locator(".line .text")).to_have_text(first_20)
            assert await _shadow(page, "#busy", "root.querySelectorAll('.line').length") == 20
            nodes = await _shadow(page, "#busy", "root.querySelectorAll('*').length")
            assert nodes < 200, nodes

            await page.evaluate("() => { window.__handled = []; }")
            for i in range(12):
                edition = "en" if i % 2 == 0 else "es"
                text = f"new {edition} {i}"
                await post_line(client, chief, text, edition=edition)
                ticker = busy if edition == "en" else page.locator("#quiet")
                await expect(ticker.locator(".line .text").nth(1 if edition == "en" else 0)).to_have_text(
                    text
                )
            handled = await page.evaluate("window.__handled")
            times = {
                edition: [
                    entry["ms"]
                    for entry in handled
                    if entry["edition"] == edition and entry["type"] == "line"
                ]
                for edition in ("en", "es")
            }
            assert len(times["en"]) == 6 and len(times["es"]) == 6, handled
            # performance.now() is coarsened (0.1 ms) on a page that is not cross-origin isolated.
            ratio = statistics.median(times["en"]) / max(statistics.median(times["es"]), 0.3)
            assert ratio < 3, times
            # Still 20 items, and the pinned line still first.
            await expect(busy.locator(".line")).to_have_count(20)
            await expect(busy.locator(".line .text").first).to_have_text("busy 0")
            # max-lines applies at once.
            await busy.evaluate("ticker => ticker.setAttribute('max-lines', '5')")
            await expect(busy.locator(".line")).to_have_count(5)
            await expect(busy.locator(".line .text").first).to_have_text("busy 0")
            longtasks = await page.evaluate("window.__longtasks")
            assert all(duration <= 50 for duration in longtasks), longtasks


async def test_relative_times_in_the_edition_language_and_the_empty_state(
    stack: Stack, partner: PartnerSite
) -> None:
    """Each line shows its age in the edition's language ("الآن", then "قبل 3 دقائق" once the page's
    clock has jumped 3 minutes, by the widget's own 30 s clock) with the absolute time in a
    <time datetime> and a title; an empty ticker says "No breaking news" in its language."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["ar"])
    url = partner.page(
        "times.html",
        '<flash-ticker id=ar edition="ar"></flash-ticker><flash-ticker id=es edition="es"></flash-ticker>'
        '<flash-ticker id=en edition="en"></flash-ticker>',
        node,
    )
    async with browser() as chromium:
        page = await chromium.new_page()
        await page.clock.install()
        await page.goto(url)
        for edition, empty in (
            ("ar", "لا أخبار عاجلة"),
            ("es", "Sin noticias de última hora"),
            ("en", "No breaking news"),
        ):
            await expect(page.locator(f"#{edition} .empty")).to_have_text(empty)
        async with httpx.AsyncClient(base_url=node.url) as client:
            line = await post_line(client, editor, "انقطاع الكهرباء في العاصمة", edition="ar")
        time = page.locator("#ar .line time")
        now = await page.evaluate(
            "new Intl.RelativeTimeFormat('ar', { numeric: 'auto' }).format(0, 'second')"
        )
        await expect(time).to_have_text(now)
        await expect(page.locator("#ar .empty")).to_have_count(0)
        async with httpx.AsyncClient(base_url=node.url) as client:
            published = (await client.get(f"/api/v1/lines/{line['id']}", headers=auth(editor))).json()
        assert await time.get_attribute("datetime") == published["line"]["published_at"]
        assert await time.get_attribute("title")
        await page.clock.fast_forward("03:00")
        later = await page.evaluate(
            "new Intl.RelativeTimeFormat('ar', { numeric: 'auto' }).format(-3, 'minute')"
        )
        assert later != now and "ago" not in later, later
        await expect(time).to_have_text(later)


async def _lefts(page: Page) -> dict[str, float]:
    """Where each line is on screen (its box's left edge, in CSS pixels), by its text."""
    lefts: dict[str, float] = await page.evaluate(
        "() => Object.fromEntries([...document.querySelector('flash-ticker').shadowRoot"
        ".querySelectorAll('.line')].map((item) =>"
        " [item.querySelector('.text').textContent, item.getBoundingClientRect().left]))"
    )
    return lefts


async def test_a_new_line_keeps_the_loop_going_and_a_flash_line_shows_at_once(
    stack: Stack, partner: PartnerSite
) -> None:
    """A new routine line takes its place without moving the line being read (the loop goes on); a
    new flash line starts the loop again from itself, at the reading start, highlighted."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    editor = await stack.token("editor", ["en"])
    url = partner.page("motion.html", '<flash-ticker edition="en" speed="200"></flash-ticker>', node)
    async with httpx.AsyncClient(base_url=node.url) as client:
        for i in range(4):
            await post_line(client, editor, f"older line number {i}")
        await stack.until_applied()
        async with browser() as chromium:
            page = await chromium.new_page(viewport={"width": 800, "height": 300})
            await page.goto(url)
            ticker = page.locator("flash-ticker")
            await expect(ticker.locator(".line")).to_have_count(4)
            await page.wait_for_function(
                "() => document.querySelector('flash-ticker').shadowRoot.querySelector('.track')"
                ".getAnimations()[0]?.currentTime > 500"
            )
            await ticker.locator(".pause").click()  # held still, so positions compare exactly
            # Paused and settled (a pause takes effect at the next frame): positions then hold.
            await page.wait_for_function(
                "() => { const motion = document.querySelector('flash-ticker').shadowRoot"
                ".querySelector('.track').getAnimations()[0];"
                " return motion?.playState === 'paused' && !motion.pending; }"
            )
            # The line being read: the one under the reading start (the viewport's left edge).
            reading = await page.evaluate(
                "() => { const root = document.querySelector('flash-ticker').shadowRoot;"
                " const x = root.querySelector('.viewport').getBoundingClientRect().left + 1;"
                " const item = [...root.querySelectorAll('.line')].find((line) => {"
                " const box = line.getBoundingClientRect(); return box.left <= x && x < box.right; });"
                " return item.querySelector('.text').textContent; }"
            )
            before = (await _lefts(page))[reading]
            await post_line(client, editor, "a routine newcomer")
            await expect(ticker.locator(".line .text").first).to_have_text("a routine newcomer")
            await page.evaluate(
                "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
            )
            after = await _lefts(page)
            assert abs(after[reading] - before) < 0.5, (reading, before, after)
            await post_line(client, editor, "a flash newcomer", urgency="flash")
            await expect(ticker.locator(".line .text").first).to_have_text("a flash newcomer")
            flash = ticker.locator(".line").first
            await expect(flash).to_have_class("line fresh")
            viewport = await page.evaluate(
                "() => document.querySelector('flash-ticker').shadowRoot.querySelector('.viewport')"
                ".getBoundingClientRect().left"
            )
            assert abs((await _lefts(page))["a flash newcomer"] - viewport) < 2


@pytest.mark.parametrize(("width", "language"), [(390, "ar"), (1366, "en")])
async def test_the_bounded_set_on_a_phone_and_a_desktop_in_both_languages(
    stack: Stack, partner: PartnerSite, width: int, language: str
) -> None:
    """On a 390 px Arabic page and a 1366 px English one, an English and an Arabic ticker with 25
    live lines each hold 20 items, the pinned (oldest) line first and then the newest 19, and the
    page is no wider than its screen."""
    stack.worker()
    node = stack.service(FLASHWIRE_ALLOWED_ORIGINS=partner.origin)
    chief = await stack.token("chief", ["en", "ar"])
    texts: dict[str, list[str]] = {"en": [], "ar": []}
    async with httpx.AsyncClient(base_url=node.url) as client:
        for edition, words in (("en", "Line number"), ("ar", "الخبر رقم")):
            for i in range(25):
                line = await post_line(client, chief, f"{words} {i}", edition=edition)
                texts[edition].append(f"{words} {i}")
                if i == 0:
                    pinned = await client.post(f"/api/v1/lines/{line['id']}/pin", headers=auth(chief))
                    assert pinned.status_code == 201, pinned.text
        await stack.until_applied()
    body = '<flash-ticker id=en edition="en"></flash-ticker><flash-ticker id=ar edition="ar"></flash-ticker>'
    async with browser() as chromium:
        page = await chromium.new_page(viewport={"width": width, "height": 800})
        await page.goto(partner.page("bounded.html", body, node, lang=language))
        for edition in ("en", "ar"):
            expected = [texts[edition][0], *reversed(texts[edition][-19:])]
            await expect(page.locator(f"#{edition} .line .text")).to_have_text(expected)
            items = await _shadow(page, f"#{edition}", "root.querySelectorAll('li.line').length")
            assert items == 20, (edition, items)
        assert await page.evaluate("document.scrollingElement.scrollWidth") <= width
