"""The desk's answer to a conflict (issue 11, "What to build": optimistic concurrency), in Chromium
against a real worker, service and Redis: when another editor changed a line first (412), the desk
shows what they changed, merges a correction word by word when the two edits do not overlap, and
lets the editor publish against the version now shown or keep theirs; a retraction is asked again
with the new text; a pin shows what changed and can be made again. The other editor's change is
made through the API, as in tests/test_concurrency.py.

One stack (conftest's `module_stack`) and one browser (`chromium`) serve the whole module: each
test has its own tokens, lines and browser context, so the module costs one start-up.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, Request, Route, expect

from tests.conftest import ServiceNode, Stack, auth, post_line
from tests.test_accessibility import blocking_violations

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

Sent = list[tuple[str, str | None]]


@pytest_asyncio.fixture(loop_scope="module")
async def client(module_stack: tuple[Stack, ServiceNode]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=module_stack[1].url) as opened:
        yield opened


async def _desk(chromium: Browser, node: ServiceNode, token: str, width: int = 1280) -> tuple[Page, Sent]:
    """A signed-in desk at `width` px, and the changes it sends: (action, If-Match)."""
    context = await chromium.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    sent: Sent = []

    def record(request: Request) -> None:
        if request.method == "POST" and "/api/v1/lines/" in request.url:
            sent.append((request.url.rsplit("/", 1)[1], request.headers.get("if-match")))

    page.on("request", record)
    await page.goto(f"{node.url}/desk")
    await page.locator("#token").fill(token)
    await page.locator("#sign-in-button").click()
    await expect(page.locator("#desk")).to_be_visible()
    # Signed in and loaded: the desk's last step gives the headline the focus.
    await expect(page.locator("#text")).to_be_focused()
    return page, sent


def _row(desk: Page, line: dict[str, Any]) -> Locator:
    """The line's row in the desk's live list."""
    return desk.locator(f'#live-lines > li[data-line-id="{line["id"]}"]')


async def _correct(client: httpx.AsyncClient, token: str, line_id: str, text: str, if_match: str) -> None:
    """Another editor's correction through the API."""
    response = await client.post(
        f"/api/v1/lines/{line_id}/corrections",
        json={"text": text},
        headers={**auth(token), "If-Match": if_match},
    )
    assert response.status_code == 201, response.text


async def _line(client: httpx.AsyncClient, token: str, line_id: str) -> dict[str, Any]:
    """The line as readers' API gives it now."""
    response = await client.get(f"/api/v1/lines/{line_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    line: dict[str, Any] = response.json()["line"]
    return line


async def test_the_merge_is_word_by_word_and_refuses_overlapping_edits(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser
) -> None:
    """web/desk/merge.js as the desk runs it: separate edits are combined, overlapping or touching
    ones are not, the same edit made twice is made once, and Arabic splits into words."""
    context = await chromium.new_context()
    page = await context.new_page()
    await page.goto(f"{module_stack[1].url}/desk")
    results = await page.evaluate(
        """async () => {
            const { merge3, tokenize, wordDiff } = await import("/web/desk/merge.js");
            const base = "Magnitude 6.8 earthquake strikes off Chile";
            return {
                separate: merge3(base, base.replace("6.8", "7.1"), base.replace("Chile", "Peru")),
                overlap: merge3("Storm shuts port", "Storm shuts two ports", "Storm shuts the harbour"),
                touching: merge3("Fire in Paris", "Fire in Lyon", "Fire in Paris suburbs"),
                same: merge3("Fire in Paris", "Fire in Lyon", "Fire in Lyon"),
                unchanged: merge3(base, base, base.replace("Chile", "Peru")),
                arabic: tokenize("زلزال بقوة 6.1 درجة", "ar"),
                diff: wordDiff(base, base.replace("Chile", "Peru")),
            };
        }"""
    )
    assert results["separate"] == {"clean": True, "text": "Magnitude 7.1 earthquake strikes off Peru"}
    assert results["overlap"] == {"clean": False, "text": "Storm shuts two ports"}
    assert results["touching"] == {"clean": False, "text": "Fire in Lyon"}
    assert results["same"] == {"clean": True, "text": "Fire in Lyon"}
    assert results["unchanged"] == {"clean": True, "text": "Magnitude 6.8 earthquake strikes off Peru"}
    assert results["arabic"] == ["زلزال", " ", "بقوة", " ", "6.1", " ", "درجة"]
    assert results["diff"] == [
        {"op": "equal", "text": "Magnitude 6.8 earthquake strikes off "},
        {"op": "delete", "text": "Chile"},
        {"op": "insert", "text": "Peru"},
    ]


async def test_separate_corrections_are_combined_and_published_on_a_phone(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """The finding's case at 390 px: the editor changes "6.8" to "7.1" while another editor changes
    "Chile" to "Peru". The 412 opens the panel in the row with "Peru" marked as theirs, the text
    becomes both changes, and "Publish" corrects the version shown: readers get "7.1 … Peru"."""
    stack, node = module_stack
    chief = await stack.token("chief", ["en"], name="Chiara")
    other = await stack.token("editor", ["en"], name="Olga")
    line = await post_line(client, chief, "Magnitude 6.8 earthquake strikes off Chile")
    await stack.until_applied()
    desk, sent = await _desk(chromium, node, chief, width=390)
    await _row(desk, line).get_by_role("button", name=re.compile("^Correct “Magnitude 6.8")).click()
    await desk.get_by_label("Corrected text").fill("Magnitude 7.1 earthquake strikes off Chile")
    await _correct(client, other, line["id"], "Magnitude 6.8 earthquake strikes off Peru", '"v1"')
    await stack.until_applied()
    await desk.get_by_role("button", name="Publish correction").click()

    panel = _row(desk, line).locator("[role=alert].conflict")
    await expect(panel).to_contain_text("Someone else changed this line while you were editing it")
    await expect(panel).to_contain_text("revision 2")
    await expect(panel).to_contain_text("Their version, by Olga")
    await expect(panel.locator("ins")).to_have_text("added: Peru")
    await expect(panel.locator("del")).to_have_text("removed: Chile")
    await expect(panel).to_contain_text("Both changes combined below — check and publish.")
    await expect(desk.get_by_label("Corrected text")).to_have_value(
        "Magnitude 7.1 earthquake strikes off Peru"
    )
    await expect(desk.locator("#errors")).to_be_empty()
    assert await desk.evaluate("document.documentElement.scrollWidth") <= 390
    assert await blocking_violations(desk) == []

    await desk.get_by_role("button", name="Publish", exact=True).click()
    await expect(desk.locator("#notice")).to_have_text("Correction published.")
    await stack.until_applied()
    assert (await _line(client, chief, line["id"]))["text"] == "Magnitude 7.1 earthquake strikes off Peru"
    assert sent == [("corrections", '"v1"'), ("corrections", '"v2"')]


async def test_overlapping_corrections_keep_the_editors_text_and_theirs_can_be_kept(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """Both editors rewrote "main port": the editor's text stays, the panel says the edits overlap,
    and "Keep their version" closes the form, shows their text and sends nothing."""
    stack, node = module_stack
    chief = await stack.token("chief", ["en"], name="Chiara")
    other = await stack.token("editor", ["en"], name="Olga")
    line = await post_line(client, chief, "Storm closes main port")
    await stack.until_applied()
    desk, sent = await _desk(chromium, node, chief)
    await _row(desk, line).get_by_role("button", name=re.compile("^Correct “Storm closes")).click()
    await desk.get_by_label("Corrected text").fill("Storm closes two ports")
    await _correct(client, other, line["id"], "Storm closes the main harbour", '"v1"')
    await stack.until_applied()
    await desk.get_by_role("button", name="Publish correction").click()

    row = _row(desk, line)
    await expect(row.locator(".conflict")).to_contain_text("Your edits and theirs overlap")
    await expect(row.locator(".conflict ins").first).to_contain_text("the")
    await expect(desk.get_by_label("Corrected text")).to_have_value("Storm closes two ports")
    await row.get_by_role("button", name="Keep their version").click()
    await expect(desk.get_by_label("Corrected text")).to_have_count(0)
    await expect(row.locator(".fw-list")).to_contain_text("Storm closes the main harbour")
    await expect(row.locator(".conflict")).to_have_count(0)
    assert sent == [("corrections", '"v1"')]
    await stack.until_applied()
    shown = await _line(client, chief, line["id"])
    assert (shown["text"], shown["revision"]) == ("Storm closes the main harbour", 2)


async def test_a_second_conflict_shows_the_panel_again_against_the_newer_version(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """Another change lands while the editor checks the combined text: "Publish" gets a 412 again,
    the panel shows what changed since the version it showed, and the next "Publish" combines all."""
    stack, node = module_stack
    chief = await stack.token("chief", ["en"], name="Chiara")
    other = await stack.token("editor", ["en"], name="Olga")
    line = await post_line(client, chief, "Magnitude 6.8 earthquake strikes off Chile")
    await stack.until_applied()
    desk, sent = await _desk(chromium, node, chief)
    await _row(desk, line).get_by_role("button", name=re.compile("^Correct “Magnitude 6.8")).click()
    await desk.get_by_label("Corrected text").fill("Magnitude 7.1 earthquake strikes off Chile")
    await _correct(client, other, line["id"], "Magnitude 6.8 earthquake strikes off Peru", '"v1"')
    await stack.until_applied()
    await desk.get_by_role("button", name="Publish correction").click()
    panel = _row(desk, line).locator(".conflict")
    await expect(panel).to_contain_text("revision 2")
    await _correct(
        client, other, line["id"], "Magnitude 6.8 earthquake strikes off Peru, tsunami warning", '"v2"'
    )
    await stack.until_applied()
    await desk.get_by_role("button", name="Publish", exact=True).click()
    await expect(panel).to_contain_text("revision 3")
    await expect(panel.locator("ins")).to_have_text("added: , tsunami warning")
    await expect(panel.locator("del")).to_have_count(0)
    await expect(desk.get_by_label("Corrected text")).to_have_value(
        "Magnitude 7.1 earthquake strikes off Peru, tsunami warning"
    )
    await desk.get_by_role("button", name="Publish", exact=True).click()
    await expect(desk.locator("#notice")).to_have_text("Correction published.")
    await stack.until_applied()
    text = (await _line(client, chief, line["id"]))["text"]
    assert text == "Magnitude 7.1 earthquake strikes off Peru, tsunami warning"
    assert sent == [("corrections", '"v1"'), ("corrections", '"v2"'), ("corrections", '"v3"')]


async def test_a_retraction_after_a_change_is_asked_again_and_made_on_yes(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """The line is corrected while the retract dialog is open: Confirm gets a 412, the dialog asks
    again with the new text (changes marked, the reason kept), and Confirm retracts it with the new
    revision."""
    stack, node = module_stack
    chief = await stack.token("chief", ["en"], name="Chiara")
    other = await stack.token("editor", ["en"], name="Olga")
    line = await post_line(client, chief, "Bridge closed after ship collision")
    await stack.until_applied()
    desk, sent = await _desk(chromium, node, chief)
    await _row(desk, line).get_by_role("button", name=re.compile("^Retract “Bridge closed")).click()
    dialog = desk.locator("#confirm")
    await expect(dialog).to_be_visible()
    await _correct(client, other, line["id"], "Bridge reopened after ship collision", '"v1"')
    await stack.until_applied()
    await desk.locator("#confirm-reason").fill("duplicate")
    await desk.locator("#confirm-ok").click()

    await expect(desk.locator("#confirm-text")).to_have_text(
        "The line was changed since you chose to retract it: now “Bridge reopened after ship collision”."
        " Retract it anyway?"
    )
    await expect(dialog).to_be_visible()
    await expect(desk.locator("#confirm-details ins")).to_have_text("added: reopened")
    await expect(desk.locator("#confirm-reason")).to_have_value("duplicate")
    await desk.locator("#confirm-ok").click()
    await expect(desk.locator("#notice")).to_have_text("Retraction: done.")
    await stack.until_applied()
    assert (await _line(client, chief, line["id"]))["status"] == "canceled"
    assert sent == [("retraction", '"v1"'), ("retraction", '"v2"')]


async def test_a_pin_after_a_change_shows_what_changed_and_can_be_made_again(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """The desk still shows the line as it was (its list requests held back) when the editor pins
    it: the 412's panel in the row says the pin was not made and shows the new text, the row then
    shows the line as it is, and Pin again pins that version."""
    stack, node = module_stack
    chief = await stack.token("chief", ["en"], name="Chiara")
    other = await stack.token("editor", ["en"], name="Olga")
    line = await post_line(client, chief, "Rail strike called for Monday")
    await stack.until_applied()
    desk, sent = await _desk(chromium, node, chief)
    monday = re.compile("^Pin “Rail strike called for Monday")
    await expect(_row(desk, line).get_by_role("button", name=monday)).to_be_visible()

    async def hold_back(route: Route) -> None:
        await route.abort()

    lines = "**/api/v1/editions/en/lines"
    await desk.route(lines, hold_back)
    await _correct(client, other, line["id"], "Rail strike called for Tuesday", '"v1"')
    await stack.until_applied()
    await _row(desk, line).get_by_role("button", name=monday).click()

    panel = _row(desk, line).locator("[role=alert].conflict")
    await expect(panel).to_contain_text("so your action (Pin) was not made: it is now at revision 2")
    await expect(panel.locator("ins")).to_have_text("added: Tuesday")
    await desk.unroute(lines)
    await expect(_row(desk, line).locator(".fw-list")).to_contain_text("Tuesday")
    await expect(panel).to_contain_text("revision 2")  # the panel stays while the row is refreshed
    await (
        _row(desk, line)
        .get_by_role("button", name=re.compile("^Pin “Rail strike called for Tuesday"))
        .click()
    )
    await expect(
        _row(desk, line).get_by_role("button", name=re.compile("^Unpin “Rail strike"))
    ).to_be_visible()
    await expect(panel).to_have_count(0)
    assert sent == [("pin", '"v1"'), ("pin", '"v2"')]


async def test_the_arabic_desk_shows_the_conflict_in_arabic_right_to_left(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """An editor of the Arabic edition at 1366 px: the panel is in Arabic and right to left, their
    Arabic word is marked, and the two corrections are combined and published."""
    stack, node = module_stack
    chief = await stack.token("chief", ["ar"], name="Rania")
    other = await stack.token("editor", ["ar"], name="Omar")
    base = "زلزال بقوة 6.1 درجة يضرب قبالة الساحل الشمالي"
    line = await post_line(client, chief, base, edition="ar")
    await stack.until_applied()
    desk, sent = await _desk(chromium, node, chief, width=1366)
    await expect(desk.locator("html")).to_have_attribute("dir", "rtl")
    await _row(desk, line).get_by_role("button", name=re.compile("^تصحيح «زلزال")).click()
    await desk.get_by_label("النص المصحح").fill(base.replace("6.1", "6.4"))
    await _correct(client, other, line["id"], base.replace("الشمالي", "الجنوبي"), '"v1"')
    await stack.until_applied()
    await desk.get_by_role("button", name="انشر التصحيح").click()

    panel = _row(desk, line).locator("[role=alert].conflict")
    await expect(panel).to_contain_text("غيّر محرر آخر هذا الخبر أثناء تحريرك له: أصبح الآن في المراجعة 2.")
    await expect(panel).to_contain_text("نسخة Omar")
    await expect(panel.locator("ins")).to_have_text("أُضيف: الجنوبي")
    await expect(panel).to_contain_text("دُمج التعديلان في النص أدناه — راجعه ثم انشره.")
    assert await panel.evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert await panel.locator(".conflict-text").get_attribute("lang") == "ar"
    assert await blocking_violations(desk) == []
    await expect(desk.get_by_label("النص المصحح")).to_have_value(
        "زلزال بقوة 6.4 درجة يضرب قبالة الساحل الجنوبي"
    )
    await expect(desk.get_by_role("button", name="أبقِ نسخة المحرر الآخر")).to_be_visible()
    await desk.get_by_role("button", name="انشر", exact=True).click()
    await expect(desk.locator("#notice")).to_have_text("نُشر التصحيح.")
    await stack.until_applied()
    assert (await _line(client, chief, line["id"]))["text"] == "زلزال بقوة 6.4 درجة يضرب قبالة الساحل الجنوبي"
    assert sent == [("corrections", '"v1"'), ("corrections", '"v2"')]


async def test_an_open_correction_keeps_the_focus_while_the_lists_refresh(
    module_stack: tuple[Stack, ServiceNode], chromium: Browser, client: httpx.AsyncClient
) -> None:
    """The live list is refreshed every 2 s and on every event; the row being corrected is not
    moved when it is in place, so an editor combining two versions by hand keeps typing in it."""
    stack, node = module_stack
    chief = await stack.token("chief", ["en"], name="Chiara")
    line = await post_line(client, chief, "Airport reopens after fog")
    await stack.until_applied()
    desk, _ = await _desk(chromium, node, chief)
    await _row(desk, line).get_by_role("button", name=re.compile("^Correct “Airport reopens")).click()
    await expect(desk.get_by_label("Corrected text")).to_be_focused()
    # The next refresh rewrites the row's reach; once it has, where is the focus?
    focused = await desk.evaluate(
        """(id) => new Promise((resolve) => {
            const reach = document.querySelector(`li[data-line-id="${id}"] .reach`);
            new MutationObserver(() => resolve(document.activeElement.tagName))
                .observe(reach, { childList: true, characterData: true, subtree: true });
        })""",
        line["id"],
    )
    assert focused == "TEXTAREA"
