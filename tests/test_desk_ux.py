"""The desk as an editor uses it under pressure (issue 11), in a real headless chromium: the form
returns to its defaults after a post, button names cut by grapheme, the edition named where one
composes, and every time with its zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import sign_in_desk
from tests.conftest import ServiceNode, Stack, auth

# One chromium for the module's tests (the `chromium` fixture, tests/conftest.py), so they run on the
# module's event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# WCAG 2.x contrast ratio of an element's text against the first opaque background behind it,
# from getComputedStyle (https://www.w3.org/TR/WCAG21/#dfn-contrast-ratio).
CONTRAST_JS = """(e) => {
  const rgb = (css) => css.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  let back = e;
  while (back) {
    const color = rgb(getComputedStyle(back).backgroundColor);
    if (color.length < 4 || color[3] === 1) break;
    back = back.parentElement;
  }
  const bg = back ? rgb(getComputedStyle(back).backgroundColor) : [255, 255, 255];
  const fg = rgb(getComputedStyle(e).color);
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}"""

# For every line on the desk, whether each button's accessible name is well-formed Unicode (no lone
# surrogate, no U+FFFD) and quotes the line, or a prefix of it made of whole grapheme clusters.
NAMES_JS = """() => {
  const segmenter = new Intl.Segmenter(undefined, {granularity: "grapheme"});
  const graphemes = (s) => Array.from(segmenter.segment(s), (p) => p.segment);
  const lone = /[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]/;
  const problems = [];
  let checked = 0;
  for (const row of document.querySelectorAll("#live-lines .desk-line")) {
    const text = row.querySelector(".fw-text").textContent;
    for (const button of row.querySelectorAll("button[aria-label]")) {
      const name = button.getAttribute("aria-label");
      checked += 1;
      if (lone.test(name) || name.includes("\\uFFFD")) { problems.push(`malformed: ${name}`); continue; }
      const quoted = name.replace(/^[^“«]*[“«]/, "").replace(/[”»][^”»]*$/, "");  // “…” or «…» (messages.js)
      const prefix = quoted.endsWith("…") && quoted !== text ? quoted.slice(0, -1) : quoted;
      const whole = graphemes(text).slice(0, graphemes(prefix).length).join("");
      if (whole !== prefix) problems.push(`cut inside a character: ${name}`);
    }
  }
  return { checked, problems };
}"""


async def _sign_in(page: Page, node: ServiceNode, token: str) -> None:
    await sign_in_desk(page, node.url, token)


def _local_input(moment: datetime, zone: str) -> str:
    """`moment` as a datetime-local field value in `zone`."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M:%S")


async def test_the_form_returns_to_its_defaults_after_a_post_and_keeps_tags_only_when_asked(
    stack: Stack,
    chromium: Browser,
) -> None:
    """After a scheduled flash line with two topics, a link, a source, an expiry and an embargo, the
    form shows its defaults; with "Keep tags" ticked the next post keeps the topics (and only them),
    and the box is cleared again."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    desk = await (await chromium.new_context(timezone_id="UTC")).new_page()
    await _sign_in(desk, node, chief)
    await desk.get_by_label("Headline").fill("Central bank to announce emergency rate decision")
    await desk.get_by_label("Flash").check()
    await desk.get_by_label("economy").check()
    await desk.get_by_label("Europe", exact=True).check()
    await desk.get_by_label("Link to full story").fill("https://example.com/story")
    await desk.get_by_label("Source").fill("Reuters")
    await desk.locator("#expiry").select_option("10800")
    release = datetime.now(UTC) + timedelta(hours=1)
    await desk.get_by_label("Release at (embargo)").fill(_local_input(release, "UTC"))
    await desk.locator("#post").click()
    await expect(desk.locator("#notice")).to_contain_text("Scheduled for")
    await expect(desk.get_by_label("Headline")).to_have_value("")
    await expect(desk.get_by_label("Routine")).to_be_checked()
    assert await desk.locator("input[name=topics]:checked").count() == 0
    await expect(desk.get_by_label("Link to full story")).to_have_value("")
    await expect(desk.get_by_label("Source")).to_have_value("")
    await expect(desk.locator("#expiry")).to_have_value("")
    await expect(desk.get_by_label("Release at (embargo)")).to_have_value("")
    await expect(desk.get_by_role("button", name=re.compile("^Post line to English"))).to_be_visible()
    keep = desk.get_by_label("Keep tags for the next line (same story)")
    await expect(keep).to_be_visible()
    await expect(keep).not_to_be_checked()
    # The same story again: the editor keeps the tags on purpose.
    await desk.get_by_label("Headline").fill("Central bank: decision due at noon")
    await desk.get_by_label("Urgent").check()
    await desk.get_by_label("politics").check()
    await desk.get_by_label("Asia", exact=True).check()
    await keep.check()
    await desk.get_by_role("button", name=re.compile("^Post line to")).click()
    await expect(desk.locator("#notice")).to_have_text("Posted.")
    await expect(desk.get_by_label("Headline")).to_have_value("")
    await expect(keep).not_to_be_checked()
    await expect(desk.get_by_label("Routine")).to_be_checked()
    kept = await desk.locator("input[name=topics]:checked").evaluate_all("boxes => boxes.map(b => b.value)")
    assert sorted(kept) == ["asia", "politics"]
    # The next post goes out with exactly what the form shows.
    await desk.get_by_label("Headline").fill("Central bank statement published")
    await desk.get_by_role("button", name=re.compile("^Post line to")).click()
    # "Posted." is still on screen from the post before: wait for the form itself to reset.
    await expect(desk.get_by_label("Headline")).to_have_value("")
    await expect(desk.locator("input[name=topics]:checked")).to_have_count(0)
    async with httpx.AsyncClient(base_url=node.url) as client:
        lines = (await client.get("/api/v1/editions/en/lines", headers=auth(chief))).json()["lines"]
    sent = {line["text"]: (line["urgency"], sorted(line["topics"])) for line in lines}
    assert sent["Central bank: decision due at noon"] == ("urgent", ["asia", "politics"])
    assert sent["Central bank statement published"] == ("routine", ["asia", "politics"])


async def test_button_names_cut_line_text_by_grapheme_not_by_utf16_unit(
    stack: Stack, chromium: Browser
) -> None:
    """Lines whose 60-character cut falls inside an emoji, a flag or an Arabic letter with its marks
    give buttons whose accessible names are valid text and end on a whole character."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    arabic = "زلزال قوي يضرب سواحل تشيلي وتحذير من تسونامي في المحيط الهاد"[:58]
    texts = {
        "en": [
            "a" * 58 + "🌋 volcano erupts near the capital, flights suspended",
            "b" * 58 + "🇨🇱 Chile declares a state of emergency in the south",
            "c" * 57 + "👩🏽‍🚒 firefighters reach the town after a night of work",
        ],
        "ar": [arabic + "بِّ" + " عاجل من مراسلنا في سانتياغو حول الأضرار"],
    }
    async with httpx.AsyncClient(base_url=node.url) as client:
        for edition, lines in texts.items():
            for text in lines:
                response = await client.post(
                    "/api/v1/lines", json={"edition": edition, "text": text}, headers=auth(chief)
                )
                assert response.status_code == 201, response.text
    desk = await chromium.new_page()
    await _sign_in(desk, node, chief)
    for edition, lines in texts.items():
        await desk.locator("#edition").select_option(edition)
        await expect(desk.locator("#live-lines .desk-line")).to_have_count(len(lines))
        result = await desk.evaluate(NAMES_JS)
        assert result["problems"] == [], result
        assert result["checked"] == 5 * len(lines)


async def test_the_edition_is_legible_and_named_on_the_post_button(stack: Stack, chromium: Browser) -> None:
    """The header's edition selector and its label meet WCAG AA (4.5:1), and the Post button names
    the edition, in its own language and direction, following the selector."""
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    desk = await chromium.new_page()
    await _sign_in(desk, node, chief)
    label = desk.locator("#nav label", has=desk.locator("#edition"))
    for element in (label, desk.locator("#edition")):
        ratio = await element.evaluate(CONTRAST_JS)
        assert ratio >= 4.5, (await element.evaluate("e => e.outerHTML.slice(0, 60)"), ratio)
    post = desk.locator("#post")
    await expect(post).to_contain_text("Post line to English (en)")
    named = post.locator("#post-edition")
    assert (await named.get_attribute("dir"), await named.get_attribute("lang")) == ("ltr", "en")
    await desk.locator("#edition").select_option("ar")
    await expect(post).to_contain_text("انشر الخبر في العربية (ar)")  # an Arabic desk
    assert (await named.get_attribute("dir"), await named.get_attribute("lang")) == ("rtl", "ar")
    assert await named.evaluate("e => getComputedStyle(e).direction") == "rtl"


@pytest.mark.parametrize(("zone", "abbreviation"), [("Asia/Tokyo", r"GMT\+9"), ("Europe/Madrid", "CES?T")])
async def test_every_time_on_the_desk_shows_its_zone(
    stack: Stack, zone: str, abbreviation: str, chromium: Browser
) -> None:
    """In an editor's browser zone other than the newsroom's (UTC), the embargo field says which
    zone it is entered in, the button says when the line will go out in the editor's time (with the
    date when not today), and the notice, the scheduled list, live lines and the audit show the UTC
    time with the editor's time beside it."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    local = ZoneInfo(zone)
    context = await chromium.new_context(timezone_id=zone)
    desk = await context.new_page()
    await _sign_in(desk, node, chief)
    await expect(desk.locator("#embargo-zone")).to_contain_text(f"your time zone ({zone})")
    await desk.get_by_label("Headline").fill("Election results due")
    # Tomorrow in the editor's zone: the button gives the date.
    now = datetime.now(UTC)
    tomorrow = (now.astimezone(local) + timedelta(days=1)).replace(hour=14, minute=0, second=0, microsecond=0)
    await desk.get_by_label("Release at (embargo)").fill(_local_input(tomorrow, zone))
    day = f"{tomorrow:%a} {tomorrow.day} {tomorrow:%b}"
    post = desk.locator("#post")
    await expect(post).to_contain_text(
        re.compile(rf"^Schedule for {day},? 14:00 {abbreviation} to English \(en\)")
    )
    # Within the hour: the time alone when that is still today in the editor's zone (the date too
    # when the hour crosses the editor's midnight).
    release = (now + timedelta(hours=1)).replace(second=0, microsecond=0)
    await desk.get_by_label("Release at (embargo)").fill(_local_input(release, zone))
    at_local = release.astimezone(local)
    today = at_local.date() == now.astimezone(local).date()
    day = "" if today else f"{at_local:%a} {at_local.day} {at_local:%b},? "
    await expect(post).to_contain_text(re.compile(rf"^Schedule for {day}{at_local:%H:%M} {abbreviation} to"))
    await expect(desk.locator("#embargo-zone")).to_contain_text(f"{release:%H:%M} UTC")
    await post.click()
    both = re.compile(
        rf"{release:%H:%M} UTC \((?:\w+,? )?(?:\d+ \w+,? )?{at_local:%H:%M} {abbreviation} your time\)"
    )
    await expect(desk.locator("#notice")).to_contain_text(both)
    await expect(desk.locator("#scheduled-lines .desk-line")).to_contain_text(both)
    # A live line: posted and expiry times with both zones.
    await desk.get_by_label("Headline").fill("Polls close")
    await desk.get_by_role("button", name=re.compile("^Post line to")).click()
    row = desk.locator("#live-lines .desk-line")
    await expect(row).to_have_count(1)
    await expect(row.locator(".meta")).to_contain_text(
        re.compile(
            rf"posted .*UTC \(.*{abbreviation} your time\) · expires .*UTC \(.*{abbreviation} your time\)"
        )
    )
    await expect(desk.locator("#audit-rows tr").first).to_contain_text(
        re.compile(rf"UTC \(.*{abbreviation} your time\)")
    )
    await expect(desk.locator("#audit-zone")).to_contain_text(zone)
    await context.close()


async def test_an_editor_in_the_newsroom_zone_sees_one_time(stack: Stack, chromium: Browser) -> None:
    """In the newsroom's own zone (UTC) each time is shown once, with its zone."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    context = await chromium.new_context(timezone_id="UTC")
    desk = await context.new_page()
    await _sign_in(desk, node, chief)
    await desk.get_by_label("Headline").fill("Polls close")
    await desk.get_by_role("button", name=re.compile("^Post line to")).click()
    meta = desk.locator("#live-lines .desk-line .meta")
    await expect(meta).to_contain_text(re.compile(r"posted \d\d:\d\d UTC · expires .*UTC"))
    await expect(meta).not_to_contain_text("your time")
    await context.close()


# The page's layout problems at the current viewport: wider than the screen, a navigation link or
# control outside it, or two controls drawn over each other (rectangles intersecting by more than
# a pixel, neither inside the other).
LAYOUT_JS = """() => {
  const width = innerWidth;
  const problems = [];
  const scroll = document.scrollingElement.scrollWidth;
  if (scroll > width) problems.push(`page is ${scroll} px wide in a ${width} px viewport`);
  const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden";
  const controls = [...document.querySelectorAll(
    "header a, header select, header button, main button, main input, main select, main textarea, main a"
  )].filter(visible);
  for (const e of controls) {
    const r = e.getBoundingClientRect();
    if (r.left < -1 || r.right > width + 1) problems.push(`${e.outerHTML.slice(0, 60)} is off screen`);
  }
  for (let i = 0; i < controls.length; i++) {
    for (let j = i + 1; j < controls.length; j++) {
      const [a, b] = [controls[i], controls[j]];
      if (a.contains(b) || b.contains(a)) continue;
      const [p, q] = [a.getBoundingClientRect(), b.getBoundingClientRect()];
      const x = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const y = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (x > 1 && y > 1) problems.push(`${a.outerHTML.slice(0, 50)} overlaps ${b.outerHTML.slice(0, 50)}`);
    }
  }
  return problems;
}"""


@pytest.mark.parametrize("edition", ["en", "ar"])
async def test_the_desk_fits_a_phone_and_keeps_its_desktop_layout(
    stack: Stack, edition: str, chromium: Browser
) -> None:
    """With lines, scheduled lines and an audit trail: at 390 and 360 px the page is no wider than the
    screen, every navigation link is on screen and nothing overlaps; at 1366 px the panels stand side
    by side and the navigation is one row, as before."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    text = {
        "en": "Earthquake of magnitude 6.1 strikes off the coast of Chile; tsunami warning for the coast",
        "ar": "زلزال بقوة 6.1 درجات يضرب قبالة سواحل تشيلي وتحذير من تسونامي على ساحل المحيط الهادئ",
    }[edition]
    async with httpx.AsyncClient(base_url=node.url) as client:
        for body in (
            {
                "edition": edition,
                "text": text,
                "urgency": "flash",
                "topics": ["latin-america", "environment"],
                "url": "https://example.com/" + "a" * 150,
                "source": "Agence France-Presse",
            },
            {
                "edition": edition,
                "text": text,
                "embargo_until": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
            },
        ):
            response = await client.post("/api/v1/lines", json=body, headers=auth(chief))
            assert response.status_code == 201, response.text
    desk = await chromium.new_page(viewport={"width": 390, "height": 844})
    await _sign_in(desk, node, chief)
    await desk.locator("#edition").select_option(edition)
    await expect(desk.locator("#live-lines .desk-line")).to_have_count(1)
    await expect(desk.locator("#scheduled-lines .desk-line")).to_have_count(1)
    await expect(desk.locator("#audit-rows tr")).to_have_count(2)
    await desk.locator("#text").fill(text)
    for width in (390, 360):
        await desk.set_viewport_size({"width": width, "height": 800})
        problems = await desk.evaluate(LAYOUT_JS)
        assert problems == [], (width, problems)
        links = await desk.locator("#nav a").all()  # named in the edition's language
        assert len(links) == 5
        for link in links:
            await expect(link).to_be_in_viewport()
    await desk.set_viewport_size({"width": 1366, "height": 900})
    problems = await desk.evaluate(LAYOUT_JS)
    assert problems == [], (1366, problems)
    tops = await desk.evaluate(
        "['#compose', '#live'].map((s) => document.querySelector(s).getBoundingClientRect().top)"
    )
    assert tops[0] == tops[1], "compose and live lines side by side"
    links = await desk.locator("#nav a").evaluate_all(
        "links => links.map((a) => a.getBoundingClientRect().top)"
    )
    assert len(set(links)) == 1, "the navigation is one row"


async def test_each_edition_keeps_its_own_draft_and_a_posted_line_shows_its_tags(
    stack: Stack, chromium: Browser
) -> None:
    """A draft written for English (text, flash, a section) is put aside when the editor switches
    to Arabic, whose form starts at its defaults, and comes back on switching back; the posted
    line's row says what it went out with (urgency and topics, named)."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    desk = await chromium.new_page()
    await _sign_in(desk, node, chief)
    await desk.locator("#text").fill("Central bank raises rates")
    await desk.locator("input[name=urgency][value=flash]").check()
    await desk.locator("input[name=topics][value=economy]").check()
    await desk.locator("#edition").select_option("ar")
    await expect(desk.locator("html")).to_have_attribute("lang", "ar")
    await expect(desk.locator("#text")).to_have_value("")
    await expect(desk.locator("input[name=urgency][value=routine]")).to_be_checked()
    await expect(desk.locator("input[name=topics]:checked")).to_have_count(0)
    await desk.locator("#text").fill("البنك المركزي يرفع أسعار الفائدة")
    await desk.locator("#edition").select_option("en")
    await expect(desk.locator("#text")).to_have_value("Central bank raises rates")
    await expect(desk.locator("input[name=urgency][value=flash]")).to_be_checked()
    await expect(desk.locator("input[name=topics]:checked")).to_have_count(1)
    await desk.get_by_role("button", name=re.compile("^Post line to English")).click()
    await expect(desk.locator("#live-lines .desk-line .tags")).to_have_text("Flash · Economy")
    await desk.locator("#edition").select_option("ar")
    await expect(desk.locator("#text")).to_have_value("البنك المركزي يرفع أسعار الفائدة")
