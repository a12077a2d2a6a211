"""The desk's audit export pages through the whole trail and saves one complete file, in a real
chromium against a real `flashwire serve` whose export answers hold at most 7 entries
(FLASHWIRE_AUDIT_EXPORT_MAX=7): the desk used to save the first answer alone, a file cut at 7
entries that looked whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Request, expect

from tests.browser import browser
from tests.conftest import Stack
from tests.test_audit_export import _post_record, _record, split_export

pytestmark = pytest.mark.slow

EXPORT_MAX = 7
ENTRIES = 25  # in the desk's edition (en): four answers of at most 7
OTHERS = 10  # in another edition (ar), interleaved: never in the desk's export


async def _fill(stack: Stack) -> list[str]:
    """ENTRIES en entries and OTHERS ar ones, as the worker writes them; the en audit ids in order."""
    redis = stack.redis()
    try:
        pipe = redis.pipeline(transaction=False)
        kinds = []
        theirs = set(range(1, 3 * OTHERS, 3))
        for index in range(ENTRIES + OTHERS):
            mine = index not in theirs
            kinds.append(mine)
            record = _record(index, f"Line {index}") if mine else _post_record(index, "ar", "Amal")
            pipe.xadd(stack.keys.audit, {"e": record})
        ids = await pipe.execute()
    finally:
        await redis.aclose()
    mine_ids = [entry_id.decode() for entry_id, mine in zip(ids, kinds, strict=True) if mine]
    assert len(mine_ids) == ENTRIES
    return mine_ids


@pytest.mark.timeout(90)
async def test_the_desk_export_pages_to_the_end_and_saves_one_complete_file(
    stack: Stack, tmp_path: Path
) -> None:
    """Export CSV and Export JSON lines on the desk of an en chief: the desk asks page after page (at
    least 4 answers of at most 7 entries) and saves one file holding each of the edition's 25
    entries once, in order, under one CSV header, ending with the closing line or row that says
    the export is complete; the editor is told it is done."""
    node = stack.service(FLASHWIRE_AUDIT_EXPORT_MAX=str(EXPORT_MAX))
    chief = await stack.token("chief", ["en"], name="Chiara")
    expected = await _fill(stack)
    async with browser() as chromium:
        context = await chromium.new_context(accept_downloads=True)
        context.set_default_timeout(10_000)
        page = await context.new_page()
        exports: list[str] = []

        def count(request: Request) -> None:
            if "/api/v1/audit/export" in request.url:
                exports.append(request.url)

        page.on("request", count)
        await page.goto(f"{node.url}/desk")
        await page.get_by_label("Editor token").fill(chief)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#desk")).to_be_visible()
        for form, label in (("csv", "Export CSV"), ("jsonl", "Export JSON lines")):
            exports.clear()
            async with page.expect_download() as started:
                await page.get_by_role("button", name=label).click()
            download = await started.value
            saved = tmp_path / f"export.{form}"
            await download.save_as(saved)
            entries, next_after = split_export(form, saved.read_bytes())
            assert [entry["audit_id"] for entry in entries] == expected, (form, len(entries), exports)
            assert next_after is None, form
            assert len(exports) >= -(-ENTRIES // EXPORT_MAX), exports
            assert all("edition=en" in url for url in exports)
            await expect(page.locator("#notice")).to_contain_text("Exported the audit trail")
            await expect(page.locator("#errors")).to_have_text("")
