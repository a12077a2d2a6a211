"""The desk page in a real headless chromium: sign in, compose, correct, retract, RTL, roles, errors."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from flashwire.core.models import RETRACT_REASON_MAX_CHARS, SOURCE_MAX_CHARS
from flashwire.core.text import URL_MAX_CHARS
from tests.browser import screenshot, sign_in_desk
from tests.conftest import ServiceNode, Stack, auth, open_reader

# One chromium for the module's tests (the `chromium` fixture, tests/conftest.py), so they run on the
# module's event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def _sign_in(page: Page, node: ServiceNode, token: str) -> None:
    # Loaded, and the desk's own reader view subscribed (as role=desk: left out of reach and
    # readers online).
    await sign_in_desk(page, node.url, token)
    # The token is kept in the tab's session, never in the URL.
    assert token not in page.url
    assert await page.evaluate("sessionStorage.getItem('flashwire.token')") == token


async def test_editor_posts_corrects_and_retracts_and_reader_page_follows(
    stack: Stack, chromium: Browser
) -> None:
    """A chief signs in, posts a line that the reader ticker shows, corrects it (the reader sees the
    new text in place) and retracts it (the reader's ticker drops it)."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    desk = await chromium.new_page()
    reader = await chromium.new_page()
    await reader.goto(f"{node.url}/live?editions=en")
    await expect(reader.locator("#status")).to_have_text("live")
    await _sign_in(desk, node, chief)
    await desk.get_by_label("Headline").fill("Central bank raises rates by half a point")
    await desk.get_by_label("Urgent").check()
    await desk.get_by_label("economy").check()
    preview = desk.locator("#preview .fw-line")
    await expect(preview).to_contain_text("Central bank raises rates by half a point")
    await expect(preview).to_have_attribute("data-urgency", "urgent")
    await desk.get_by_role("button", name="Post line").click()
    await expect(desk.locator("#notice")).to_have_text("Posted.")
    shown = reader.locator("#lines .fw-line")
    await expect(shown).to_have_count(1)
    await expect(shown).to_contain_text("Central bank raises rates by half a point")
    handle = await shown.element_handle()
    # Correct it from the desk.
    await desk.get_by_role("button", name=re.compile("^Correct “Central bank")).click()
    await desk.get_by_label("Corrected text").fill("Central bank raises rates by a quarter point")
    await desk.get_by_role("button", name="Publish correction").click()
    await expect(shown).to_contain_text("Central bank raises rates by a quarter point")
    await expect(shown.locator(".fw-corrected")).to_have_text("corrected")
    assert handle is not None and await handle.evaluate("e => e.isConnected"), "replaced in place"
    await expect(shown).to_have_count(1)
    # Reach shows on the desk, counting the reader page only, not the desk's own view.
    await expect(desk.locator("#live-lines .reach").first).to_contain_text(
        re.compile(r"reached 1 reader\b"), timeout=8000
    )
    await expect(desk.locator("#readers-online")).to_have_text("1 reader online now", timeout=8000)
    # Retract, with confirmation.
    await desk.get_by_role("button", name=re.compile("^Retract “Central bank")).click()
    dialog = desk.locator("dialog#confirm")
    await expect(dialog).to_be_visible()
    reason = desk.get_by_label("Reason (sent to live readers' apps; not in the feeds)")
    await reason.fill("Figure unconfirmed")
    await desk.get_by_role("button", name="Confirm").click()
    await expect(shown).to_have_count(0)
    await expect(desk.locator("#live-lines")).to_contain_text("No live lines")
    await expect(desk.locator("#audit-rows tr")).to_have_count(3)
    await expect(desk.locator("#audit-rows")).to_contain_text("Figure unconfirmed")
    await screenshot(desk, "desk-after-retract.png")


async def test_arabic_line_is_entered_previewed_and_shown_right_to_left(
    stack: Stack, chromium: Browser
) -> None:
    """Arabic text is composed, previewed and shown to readers right-to-left."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["ar", "en"], name="Rania")
    text = "عاجل: وقف إطلاق النار يدخل حيز التنفيذ في غزة"
    desk = await chromium.new_page(viewport={"width": 1280, "height": 1000})
    reader = await chromium.new_page()
    await reader.goto(f"{node.url}/live?editions=ar")
    await expect(reader.locator("#status")).to_have_text("live")
    await _sign_in(desk, node, editor)
    # The Arabic edition's desk speaks Arabic (tests/test_desk_i18n.py): controls by id here.
    await desk.locator("#edition").select_option("ar")
    headline = desk.locator("#text")
    assert await headline.evaluate("e => getComputedStyle(e).direction") == "rtl"
    await headline.fill(text)
    await desk.locator("input[name=topics][value=palestine]").check()
    preview = desk.locator("#preview .fw-line")
    await expect(preview).to_have_attribute("dir", "rtl")
    assert await preview.evaluate("e => getComputedStyle(e).direction") == "rtl"
    await screenshot(desk, "desk-arabic-preview.png")
    await desk.locator("#post").click()
    shown = reader.locator("#lines .fw-line")
    await expect(shown).to_contain_text(text)
    assert await shown.evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert await shown.get_attribute("lang") == "ar"
    await screenshot(reader, "reader-arabic.png")
    await expect(desk.locator("#readers .fw-line")).to_contain_text(text)
    await screenshot(desk, "desk-arabic-entered.png")


async def test_editor_page_offers_no_chief_actions_and_shows_server_refusals(
    stack: Stack, chromium: Browser
) -> None:
    """An editor's desk has no retract, pin or schedule controls and no other edition; what the server
    refuses (a javascript: link, a forced retraction, a revoked token) is shown as the server said it."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"], name="Eddie")
    admin = await stack.token("admin", ["*"], name="Ada")
    desk = await chromium.new_page()
    await _sign_in(desk, node, editor)
    assert await desk.locator("#edition option").all_inner_texts() == ["English (en)"]
    await expect(desk.get_by_label("Release at (embargo)")).to_be_hidden()
    await desk.get_by_label("Headline").fill("Polls close in the capital")
    await desk.get_by_label("Link to full story").fill("javascript:alert(1)")
    await desk.get_by_role("button", name="Post line").click()
    await expect(desk.locator("#errors")).to_contain_text("Refused (422) [url]")
    await desk.get_by_label("Link to full story").fill("")
    await desk.get_by_role("button", name="Post line").click()
    await expect(desk.locator("#notice")).to_have_text("Posted.")
    row = desk.locator("#live-lines .desk-line")
    await expect(row).to_have_count(1)
    await expect(row.get_by_role("button", name="Correct “Polls close in the capital”")).to_be_visible()
    for name in ("Retract", "Pin"):
        assert await row.get_by_role("button", name=name).count() == 0
    # Even a hand-made request from the page is refused by the server.
    line_id = await row.get_attribute("data-line-id")
    status = await desk.evaluate(
        """async (id) => (await fetch(`/api/v1/lines/${id}/retraction`, {method: "POST",
             headers: {Authorization: `Bearer ${sessionStorage.getItem('flashwire.token')}`}})).status""",
        line_id,
    )
    assert status == 403
    # Too long: the counter says so and the button is disabled.
    await desk.get_by_label("Headline").fill("x" * 281)
    await expect(desk.locator("#counter")).to_contain_text("1 over the limit")
    await expect(desk.get_by_role("button", name="Post line")).to_be_disabled()
    # Revoke the token: the desk tells the editor to sign in again.
    async with httpx.AsyncClient(base_url=node.url) as client:
        tokens = (await client.get("/api/v1/tokens", headers=auth(admin))).json()["tokens"]
        eddie = next(t for t in tokens if t["name"] == "Eddie")
        await client.post(f"/api/v1/tokens/{eddie['id']}/revoke", headers=auth(admin))
    # The desk's next request (its periodic refresh, or the editor's next action) is refused.
    await expect(desk.locator("#errors")).to_contain_text("unknown or revoked")
    await expect(desk.locator("#sign-in")).to_be_visible()
    assert await desk.evaluate("sessionStorage.getItem('flashwire.token')") is None


async def test_chief_schedules_and_cancels_from_the_page_with_keyboard_only(
    stack: Stack, chromium: Browser
) -> None:
    """A chief schedules a line with a countdown and cancels it, using only the keyboard."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["es"], name="Carmen")
    desk = await chromium.new_page()
    await _sign_in(desk, node, chief)
    await desk.locator("#ui-language").select_option("en")  # the Spanish edition's desk in English
    await desk.get_by_label("Headline").focus()
    await desk.keyboard.type("Resultados oficiales a medianoche")
    await desk.get_by_label("Release at (embargo)").focus()
    release = await desk.evaluate(
        "() => { const d = new Date(Date.now() + 3600e3);"
        " d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 19); }"
    )
    await desk.get_by_label("Release at (embargo)").fill(release)
    await desk.get_by_label("Headline").focus()
    await desk.keyboard.press("Control+Enter")
    await expect(desk.locator("#notice")).to_contain_text("Scheduled for")
    scheduled = desk.locator("#scheduled-lines .desk-line")
    await expect(scheduled).to_have_count(1)
    await expect(scheduled.locator(".countdown")).to_contain_text("in 59m")
    cancel = scheduled.get_by_role("button", name="Cancel scheduled “Resultados oficiales a medianoche”")
    await cancel.focus()
    await desk.keyboard.press("Enter")
    await expect(desk.locator("dialog#confirm")).to_be_visible()
    # Focus starts on the safe choice; Tab moves to Confirm.
    assert await desk.evaluate("document.activeElement.textContent") == "Keep it"
    await desk.keyboard.press("Tab")
    await desk.keyboard.press("Enter")
    await expect(desk.locator("#scheduled-lines")).to_contain_text("Nothing scheduled.")
    await asyncio.sleep(0.2)
    await expect(desk.locator("#audit-rows")).to_contain_text("cancel")


# A realistic edition for the screenshots: (text, urgency, topics) per edition, oldest first, and
# the line being composed.
SHOWN_LINES = {
    "en": [
        ("Taiwan's President: 'One country, two regimes' is a red line", "flash", ["politics", "asia"]),
        ("Central bank holds rates at 4.5%", "urgent", ["economy", "europe"]),
        ("Cup final moved to Sunday after storm warning", "routine", ["sports"]),
    ],
    "ar": [
        ("الرئيس التايواني: «دولة واحدة ونظامان» خط أحمر", "flash", ["politics", "asia"]),
        ("البنك المركزي يبقي سعر الفائدة عند 4.5%", "urgent", ["economy", "europe"]),
        ("تأجيل نهائي الكأس إلى الأحد بسبب تحذير من عاصفة", "routine", ["sports"]),
    ],
}
COMPOSING = {
    "en": "Earthquake of magnitude 6.1 strikes off the coast of Chile",
    "ar": "زلزال بقوة 6.1 درجات يضرب قبالة سواحل تشيلي",
}
# (edition, width) -> the screenshot (docs/ has copies: desk.png, desk-phone.png, desk-arabic.png,
# desk-arabic-phone.png).
DESK_SHOTS = {
    ("en", 1280): "desk.png",
    ("en", 390): "desk-phone.png",
    ("ar", 1280): "desk-arabic.png",
    ("ar", 390): "desk-arabic-phone.png",
}


async def test_desk_screenshots_for_the_docs(stack: Stack, chromium: Browser) -> None:
    """The desk renders a realistic edition in English and in Arabic, on a desktop and on a phone,
    with a line being composed, the reach of each line and the readers online (kept as
    test-artifacts/desk*.png, the phone's first screen only; the docs/desk*.png images are copies)."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar", "es"], name="Chiara")
    readers = [await open_reader(node.ws_url, f"editions={e}") for e in ("en", "en", "en", "ar", "ar")]
    async with httpx.AsyncClient(base_url=node.url) as client:
        for edition, lines in SHOWN_LINES.items():
            for text, urgency, topics in lines:
                body = {
                    "edition": edition,
                    "text": text,
                    "urgency": urgency,
                    "topics": topics,
                    "source": "AFP",
                }
                response = await client.post("/api/v1/lines", json=body, headers=auth(chief))
                assert response.status_code == 201
        await stack.until_applied()
    online = {"en": "3 readers online now", "ar": "2"}
    for (edition, width), name in DESK_SHOTS.items():
        desk = await chromium.new_page(viewport={"width": width, "height": 900})
        await _sign_in(desk, node, chief)
        await desk.locator("#edition").select_option(edition)
        await expect(desk.locator("html")).to_have_attribute("lang", edition)
        await expect(desk.locator("#live-lines .desk-line")).to_have_count(3)
        await desk.locator("#text").fill(COMPOSING[edition])
        await desk.locator("input[name=urgency][value=flash]").check()
        await desk.locator("input[name=topics][value=latin-america]").check()
        await expect(desk.locator("#live-lines .reach").first).to_contain_text(
            "3" if edition == "en" else "2", timeout=8000
        )
        await expect(desk.locator("#readers-online")).to_contain_text(online[edition], timeout=8000)
        path = await screenshot(desk, name, full_page=width > 390)
        assert path.stat().st_size > 10_000
        await desk.close()
    for reader in readers:
        await reader.ws.close()


async def test_the_desk_takes_its_input_limits_from_the_config(stack: Stack, chromium: Browser) -> None:
    """The source, link and retraction-reason inputs are limited to what GET /api/v1/config serves,
    which are the limits the API checks: the page holds no copy of them."""
    node = stack.service()
    editor = await stack.token("editor", ["en"], name="Lina")
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        config = (await client.get("/api/v1/config")).json()
        page_source = (await client.get("/desk")).text
    limits = {"source": SOURCE_MAX_CHARS, "url": URL_MAX_CHARS, "confirm-reason": RETRACT_REASON_MAX_CHARS}
    served = {"source": "source_max_chars", "url": "url_max_chars", "confirm-reason": "reason_max_chars"}
    assert {element: config[key] for element, key in served.items()} == limits
    assert "maxlength" not in page_source.lower()
    page = await chromium.new_page()
    await _sign_in(page, node, editor)
    for element, limit in limits.items():
        assert await page.locator(f"#{element}").evaluate("e => e.maxLength") == limit, element
