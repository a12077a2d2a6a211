"""The desk speaks the edition's language (issue 11, finding 5), in a real chromium: the Arabic desk
is right-to-left throughout with Arabic words, its preview's badges are the widget's, its topics
are named, not slugs; an English interface can be chosen and is remembered; the English desk reads
as before. /api/v1/config names every topic per desk language (flashwire/core/topics.py)."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from flashwire.core.topics import TOPIC_LANGUAGES, topic_names
from tests.browser import screenshot, sign_in_desk
from tests.conftest import ServiceNode, Stack

pytestmark = pytest.mark.slow

# On the module's event loop: one chromium for the module's browser tests (`chromium`, tests/conftest.py).
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

ARABIC_FLASH = "عاجل جدًا"  # web/ticker.js WORDS.ar.flash, the widget's badge


async def _sign_in(page: Page, node: ServiceNode, token: str) -> None:
    await sign_in_desk(page, node.url, token)


def test_topic_names_fall_back_to_the_slug() -> None:
    """A catalogued slug has a name per language; any other is the slug with dashes as spaces."""
    assert topic_names("us-canada") == {
        "en": "US & Canada",
        "ar": "الولايات المتحدة وكندا",
        "es": "EE. UU. y Canadá",
    }
    assert topic_names("cyber-security") == dict.fromkeys(TOPIC_LANGUAGES, "cyber security")


async def test_config_names_every_configured_topic(stack: Stack) -> None:
    """/api/v1/config: `topic_names` has every section and region, default or configured."""
    node = stack.service(FLASHWIRE_REGIONS="mena,cyber-space")
    async with httpx.AsyncClient(base_url=node.url) as client:
        config = (await client.get("/api/v1/config")).json()
    assert set(config["topic_names"]) == set(config["sections"]) | {"mena", "cyber-space"}
    assert config["topic_names"]["mena"]["ar"] == "الشرق الأوسط وشمال أفريقيا"
    assert config["topic_names"]["cyber-space"] == {
        "en": "cyber space",
        "ar": "cyber space",
        "es": "cyber space",
    }


@ON_MODULE_LOOP
async def test_arabic_desk_is_arabic_and_right_to_left_and_english_can_be_chosen(
    stack: Stack, chromium: Browser
) -> None:
    """An editor of the Arabic edition gets an Arabic, right-to-left desk: labels, buttons, topics,
    the preview's badge as the widget shows it, the live line's actions and the dialog. The English
    interface is one switch away, kept across a reload, and the edition's language is one back."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("chief", ["ar", "en"], name="Rania")
    text = "زلزال بقوة 6.1 درجة يضرب قبالة الساحل الشمالي"
    desk = await chromium.new_page(viewport={"width": 1280, "height": 1000})
    await _sign_in(desk, node, editor)
    html = desk.locator("html")
    await expect(html).to_have_attribute("lang", "ar")
    await expect(html).to_have_attribute("dir", "rtl")
    for where in ("header.bar", "#compose-form", "#audit-form", "#readers"):
        assert await desk.locator(where).evaluate("e => getComputedStyle(e).direction") == "rtl", where
    await expect(desk.locator("h1")).to_have_text("مكتب فلاشواير")
    await desk.get_by_label("العنوان").fill(text)
    await desk.get_by_label(ARABIC_FLASH, exact=True).check()
    await desk.get_by_label("فلسطين").check()
    regions = desk.locator("#regions")
    await expect(regions).to_contain_text("الولايات المتحدة وكندا")
    await expect(regions).not_to_contain_text("us canada")
    await expect(desk.locator("#preview .fw-label")).to_have_text(ARABIC_FLASH)
    await expect(desk.locator("#counter")).to_contain_text("حرفًا")
    post = desk.get_by_role("button", name=re.compile("^انشر الخبر في العربية"))
    await screenshot(desk, "desk-i18n-arabic.png")
    await post.click()
    await expect(desk.locator("#notice")).to_have_text("نُشر.")
    row = desk.locator("#live-lines .desk-line")
    await expect(row.get_by_role("button", name=f"سحب «{text}»")).to_be_visible()
    await expect(row.locator(".fw-label")).to_have_text(ARABIC_FLASH)
    await row.get_by_role("button", name=f"سحب «{text}»").click()
    dialog = desk.locator("dialog#confirm")
    await expect(dialog.get_by_role("heading")).to_have_text("هل أنت متأكد؟")
    await dialog.get_by_role("button", name="أبقِه").click()
    await expect(dialog).to_be_hidden()

    # The widget on the Arabic news page badges the same line with the same words.
    reader = await chromium.new_page()
    await reader.goto(f"{node.url}/?edition=ar")
    widget_line = reader.locator("flash-ticker .line", has_text=text).first
    await expect(widget_line.locator(".urgency")).to_have_text(ARABIC_FLASH, timeout=10_000)

    # An English interface for the Arabic edition: chosen, then remembered across a reload.
    await desk.get_by_label("فلسطين").check()
    await desk.get_by_label("لغة الواجهة").select_option("en")
    await expect(html).to_have_attribute("lang", "en")
    await expect(html).to_have_attribute("dir", "ltr")
    await expect(desk.get_by_label("Headline")).to_be_visible()
    await expect(desk.get_by_label("Palestine")).to_be_checked()  # the choice survives the switch
    await expect(row.get_by_role("button", name=f"Retract “{text}”")).to_be_visible()
    headline = desk.get_by_label("Headline")
    assert await headline.evaluate("e => getComputedStyle(e).direction") == "rtl"  # Arabic text stays RTL
    await desk.reload()
    await expect(desk.locator("#desk")).to_be_visible()
    await expect(desk.get_by_role("button", name=re.compile("^Post line to العربية"))).to_be_visible()
    assert await desk.evaluate("localStorage.getItem('flashwire.desk.language')") == "en"
    await expect(desk.locator("#live-lines .fw-label")).to_have_text(ARABIC_FLASH)  # the line's language
    await desk.get_by_label("Interface language").select_option("")
    await expect(html).to_have_attribute("dir", "rtl")
    assert await desk.evaluate("localStorage.getItem('flashwire.desk.language')") is None


@ON_MODULE_LOOP
async def test_english_desk_reads_as_before_and_spanish_badges_are_the_widgets(
    stack: Stack, chromium: Browser
) -> None:
    """The English desk keeps its words (topics now named, "US & Canada"); the Spanish edition's desk
    is in Spanish with the widget's Spanish badge."""
    node = stack.service()
    editor = await stack.token("editor", ["en", "es"], name="Eva")
    desk = await chromium.new_page()
    await _sign_in(desk, node, editor)
    await expect(desk.locator("html")).to_have_attribute("dir", "ltr")
    await expect(desk.locator("html")).to_have_attribute("lang", "en")
    await desk.get_by_label("Headline").fill("Polls close in the capital")
    await desk.get_by_label("Urgent").check()
    await expect(desk.get_by_label("US & Canada")).to_be_visible()
    await expect(desk.locator("#preview .fw-label")).to_have_text("URGENT")
    await expect(desk.get_by_role("button", name=re.compile("^Post line to English"))).to_be_enabled()
    await expect(desk.locator("#live-lines")).to_have_text("No live lines in this edition.")
    await desk.get_by_label("Edition").select_option("es")
    await expect(desk.locator("html")).to_have_attribute("lang", "es")
    await expect(desk.get_by_label("Titular")).to_be_visible()
    await desk.get_by_label("Titular").fill("Cierran los colegios electorales")
    await desk.get_by_label("Urgente").check()
    await expect(desk.locator("#preview .fw-label")).to_have_text("URGENTE")  # web/ticker.js WORDS.es.urgent
    await expect(desk.get_by_label("EE. UU. y Canadá")).to_be_visible()
