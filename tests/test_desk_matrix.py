"""Issue 11's desk and news-page findings, each at a phone's width (390 px) and a desktop's (1366 px),
in English and in Arabic, in Chromium against a real worker, service and Redis.

One walk per combination, as an editor works: sign in, compose a flash line with tags and an emoji
where the button names cut it, see the schedule button name the zone, post, find the form back at its
defaults, see the line with zoned times and the readers online, open the retraction dialog; then the
news page of that edition. The desk's expected words come from its own catalogue
(web/desk/messages.js) in the edition's language, so the check is that the desk speaks that
language, not English. Deeper tests of each finding, at one size, are in test_desk_ux.py,
test_desk_i18n.py, test_readers_online.py, test_feeds_semantics.py, test_demo_page.py and
test_desk_conflicts.py (finding 11); the widget's findings (13 to 19) in test_widget_connection.py
and test_widget_shared.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.conftest import ServiceNode, Stack, open_reader
from tests.test_desk_ux import CONTRAST_JS, LAYOUT_JS, NAMES_JS

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# The widget's words for a flash line (web/ticker.js WORDS), which the desk's preview must use.
FLASH_BADGE = {"en": "FLASH", "ar": "عاجل جدًا"}
HEADLINE = {
    "en": "a" * 58 + "🌋 volcano erupts near the capital, flights suspended",
    "ar": "ثوران بركان قرب العاصمة وتعليق الرحلات الجوية في المطار الدولي🌋 وإجلاء السكان",
}


@pytest_asyncio.fixture(loop_scope="module")
async def messages(
    chromium: Browser, module_stack: tuple[Stack, ServiceNode]
) -> AsyncIterator[dict[str, Any]]:
    """The desk's message catalogue, as the browser loads it."""
    page = await chromium.new_page()
    await page.goto(f"{module_stack[1].url}/desk")
    catalogue: dict[str, Any] = await page.evaluate(
        "async () => (await import('/web/desk/messages.js')).MESSAGES"
    )
    yield catalogue


def _say(catalogue: dict[str, str], key: str, **values: str) -> str:
    """The catalogue's message `key` with its {placeholders} filled, as desk.js's t() does."""
    text = catalogue[key]
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


async def _fits(page: Page, width: int) -> None:
    problems = await page.evaluate(LAYOUT_JS)
    assert problems == [], (width, problems)


@pytest.mark.parametrize("edition", ["en", "ar"])
@pytest.mark.parametrize("width", [390, 1366])
async def test_the_desk_and_the_news_page_at_both_widths_in_both_languages(
    chromium: Browser,
    module_stack: tuple[Stack, ServiceNode],
    messages: dict[str, Any],
    width: int,
    edition: str,
) -> None:
    stack, service = module_stack
    words = messages[edition]
    chief = await stack.token("chief", [edition], name=f"Chief {edition} {width}")
    context = await chromium.new_context(viewport={"width": width, "height": 900}, timezone_id="UTC")
    desk = await context.new_page()
    desk.set_default_timeout(10_000)
    await desk.goto(f"{service.url}/desk")
    await desk.locator("#token").fill(chief)
    await desk.locator("#sign-in-button").click()
    await expect(desk.locator("#desk")).to_be_visible()

    # 5: the whole desk in the edition's language and direction.
    html = desk.locator("html")
    await expect(html).to_have_attribute("lang", edition)
    await expect(html).to_have_attribute("dir", "rtl" if edition == "ar" else "ltr")
    await expect(desk.locator("#nav a").first).to_have_text(words["navCompose"])
    # 2: nothing wider than the screen, nothing off it or drawn over another control.
    await _fits(desk, width)
    for link in await desk.locator("#nav a").all():
        await expect(link).to_be_in_viewport()
    # 3: the edition legible in the header and named on the button, in its language.
    assert await desk.locator("#edition").evaluate(CONTRAST_JS) >= 4.5
    await expect(desk.locator("#post-edition")).to_have_attribute("lang", edition)
    await expect(desk.locator("#post-edition")).not_to_be_empty()

    # Compose a flash line with a section and a region.
    text = f"{HEADLINE[edition]} ({width})"
    await desk.locator("#text").fill(text)
    await desk.locator("input[name=urgency][value=flash]").check()
    await desk.locator("input[name=topics][value=environment]").check()
    us_canada = desk.locator("label", has=desk.locator("input[name=topics][value=us-canada]"))
    await expect(us_canada).not_to_contain_text("us canada")  # 5: named, not a slug
    # 5: the preview's badge is the widget's word in the edition's language.
    await expect(desk.locator("#preview")).to_contain_text(FLASH_BADGE[edition])
    # 4: with an embargo the button says when, with the zone.
    release = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    await desk.locator("#embargo").fill(release.strftime("%Y-%m-%dT%H:%M"))
    # The catalogue's sentence with the time and its zone (and, past midnight UTC, the date first).
    when = re.escape(words["scheduleFor"]).replace(re.escape("{time}"), rf"(?:.+ )?{release:%H:%M} UTC")
    await expect(desk.locator("#post-action")).to_have_text(re.compile(f"^{when}$"))
    await desk.locator("#embargo").fill("")
    await expect(desk.locator("#post-action")).to_have_text(words["postLine"])
    await _fits(desk, width)
    await desk.locator("#post").click()
    # 1: back to the defaults after the post.
    await expect(desk.locator("#text")).to_have_value("")
    await expect(desk.locator("input[name=urgency][value=routine]")).to_be_checked()
    await expect(desk.locator("input[name=topics]:checked")).to_have_count(0)

    # 5: what the desk writes itself is in the language too: who is signed in, the ticker's
    # status, the audit trail's actions.
    await expect(desk.locator("#who")).to_contain_text(words["role_chief"])
    await expect(desk.locator("#reader-status")).to_have_text(words["statusLive"])
    await expect(desk.locator("#audit-rows tr", has_text=text).first).to_contain_text(words["audit_post"])
    # The line on the desk: 4, its times with their zone; 9, button names cut by grapheme.
    row = desk.locator("#live-lines .desk-line", has_text=text)
    await expect(row).to_have_count(1)
    await expect(row.locator(".meta")).to_contain_text(re.compile(r"\d\d:\d\d UTC"))
    names = await desk.evaluate(NAMES_JS)
    assert names["problems"] == [] and names["checked"] >= 4, names
    # 7: a reader connects; the desk's own ticker connection is not counted.
    reader = await open_reader(service.ws_url, f"editions={edition}")
    try:
        await expect(desk.locator("#readers-online")).to_have_text(
            _say(words, "readersOnlineOne", n="1"), timeout=10_000
        )
    finally:
        await reader.ws.close()
    await _fits(desk, width)
    # 10: the retraction dialog says what each feed does.
    await row.locator("button.danger").click()
    await expect(desk.locator("#confirm-text")).to_have_text(_say(words, "retractConfirm", line=text))
    await desk.locator("#confirm button[value=cancel]").click()

    # 6 and 12: the news page of the edition, the ticker under the site's header, an unfiltered snippet.
    news = await context.new_page()
    await news.goto(f"{service.url}/?edition={edition}")
    ticker = news.locator("flash-ticker")
    await expect(ticker.locator(".line .text").first).to_have_text(text)
    await expect(ticker.locator(".line").first.locator("time.ago")).to_have_count(1)
    header, bar, article = [
        await news.locator(selector).first.bounding_box()
        for selector in ("header", "flash-ticker", "article")
    ]
    assert header and bar and article
    assert header["y"] < bar["y"] < article["y"], (header, bar, article)
    snippet = await news.locator("#snippet").inner_text()
    assert f'edition="{edition}"' in snippet and "topics" not in snippet, snippet
    width_used = await news.evaluate("document.scrollingElement.scrollWidth")
    assert width_used <= width, width_used
    await context.close()
