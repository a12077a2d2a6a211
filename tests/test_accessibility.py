"""Accessibility checked by a tool, not by eye (issue 11): axe-core in Chromium on every page a
reader or an editor uses, in English and Arabic, at phone and desktop widths.

axe-core (bundled by axe-playwright-python) runs the WCAG 2.x A/AA rules and best practices
inside the page, shadow DOM included (the widget's root is open). The bar is zero violations of
impact "serious" or "critical"; the report of any that remain names the rule and the elements.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, expect

from tests.browser import DESK_LIVE
from tests.conftest import Stack, post_line
from tests.test_widget import PartnerSite

# One chromium for the module's tests (the `chromium` fixture, tests/conftest.py), so they run on the
# module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

BLOCKING = ("serious", "critical")
WIDTHS = (390, 1366)


async def blocking_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one line each."""
    results = await Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} — "
        + ", ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        for violation in results.response["violations"]
        if violation["impact"] in BLOCKING
    ]


async def test_the_checker_reports_a_serious_violation(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """The check can fail: an image without a text alternative and a nameless button are reported."""
    node = stack.service()
    url = partner.page("broken.html", '<main><img src="x.png"><button></button></main>', node)
    page = await chromium.new_page()
    await page.goto(url)
    found = await blocking_violations(page)
    assert any(line.startswith("image-alt") for line in found), found
    assert any(line.startswith("button-name") for line in found), found


async def test_demo_page_and_live_list_have_no_serious_violation(stack: Stack, chromium: Browser) -> None:
    """The demo news page in each edition and /live, at 390 and 1366 px, with lines showing."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "ar", "es"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(
            client, editor, "Magnitude 6.1 earthquake strikes off the north coast", urgency="flash"
        )
        await post_line(
            client, editor, "زلزال بقوة 6.1 درجة يضرب قبالة الساحل الشمالي", edition="ar", urgency="flash"
        )
        await post_line(client, editor, "El banco central mantiene los tipos", edition="es", urgency="urgent")
    problems: list[str] = []
    for width in WIDTHS:
        page = await chromium.new_page(viewport={"width": width, "height": 900})
        for edition in ("en", "ar", "es"):
            await page.goto(f"{node.url}/?edition={edition}")
            await expect(page.locator("flash-ticker .line").first).to_be_attached(timeout=10_000)
            await page.locator("details").first.evaluate("(el) => { el.open = true; }")
            problems += [f"/?edition={edition} at {width}px: {p}" for p in await blocking_violations(page)]
        await page.goto(f"{node.url}/live")
        await expect(page.locator("#status")).to_have_text("live")
        problems += [f"/live at {width}px: {p}" for p in await blocking_violations(page)]
        await page.close()
    assert not problems, "\n".join(problems)


async def test_widget_on_a_partner_page_has_no_serious_violation(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """The widget embedded on a partner's page: with lines, empty, and offline after its server stopped."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "ar"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "Polls close in the capital", urgency="urgent")
    url = partner.page(
        "widget.html",
        '<main><flash-ticker id="en" edition="en"></flash-ticker>'
        '<div dir="rtl" lang="ar"><flash-ticker id="ar" edition="ar"></flash-ticker></div></main>',
        node,
    )
    problems: list[str] = []
    for width in WIDTHS:
        page = await chromium.new_page(viewport={"width": width, "height": 700})
        await page.goto(url)
        await expect(page.locator("#en .line").first).to_be_attached(timeout=10_000)
        await expect(page.locator("#ar")).to_have_attribute("data-transport", "ws")
        problems += [f"live at {width}px: {p}" for p in await blocking_violations(page)]
        await page.close()
    page = await chromium.new_page()
    await page.goto(url)
    await expect(page.locator("#en .line").first).to_be_attached(timeout=10_000)
    await page.context.set_offline(True)
    await page.evaluate("window.dispatchEvent(new Event('offline'))")
    await expect(page.locator("#en")).to_have_attribute("data-state", "offline")
    problems += [f"offline: {p}" for p in await blocking_violations(page)]
    assert not problems, "\n".join(problems)


async def test_desk_signed_in_with_its_dialog_open_has_no_serious_violation(
    stack: Stack, chromium: Browser
) -> None:
    """The desk of a chief, in English and Arabic, at 390 and 1366 px: signed in with a live line,
    a scheduled one and the audit shown, then with the correction form and the retract dialog open."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url) as client:
        for edition, text in (("en", "Parliament dissolved"), ("ar", "حل البرلمان")):
            await post_line(client, chief, text, edition=edition, urgency="flash")
            later = datetime.now(UTC) + timedelta(hours=2)
            await post_line(client, chief, f"{text} (2)", edition=edition, embargo_until=later.isoformat())
    problems: list[str] = []
    for width in WIDTHS:
        for edition in ("en", "ar"):
            page = await chromium.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(10_000)
            await page.goto(f"{node.url}/desk")
            await expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
            problems += [f"sign-in at {width}px: {p}" for p in await blocking_violations(page)]
            await page.get_by_label("Editor token").fill(chief)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#desk")).to_be_visible()
            await page.locator("select").first.select_option(edition)
            await expect(page.locator("#reader-status")).to_have_text(DESK_LIVE)
            # The Arabic edition's desk speaks Arabic (tests/test_desk_i18n.py): buttons by place.
            await page.locator("#audit-form button[type=submit]").click()
            where = f"desk {edition} at {width}px"
            problems += [f"{where}: {p}" for p in await blocking_violations(page)]
            await page.locator("#live-lines .actions button.danger").first.click()
            dialog = page.locator("dialog#confirm")
            await expect(dialog).to_be_visible()
            problems += [f"{where}, retract dialog: {p}" for p in await blocking_violations(page)]
            await dialog.locator("button[value=cancel]").click()
            await expect(dialog).to_be_hidden()
            await page.locator("#live-lines .actions button").first.click()  # Correct
            problems += [f"{where}, correcting: {p}" for p in await blocking_violations(page)]
            await page.close()
    assert not problems, "\n".join(problems)
