"""The desk shows, per line, how its push went (docs/push.md; issue 12 "Reach for pushes"): how many
targets the fan-out was for, how many their push services accepted, removed (gone) and failed, and
how long it took, beside the line's live reach; in the desk's language."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.browser import sign_in_desk
from tests.conftest import Stack
from tests.push_stack import PushServices, registration_body

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
async def web_push(tmp_path: Path) -> AsyncIterator[PushServices]:
    started = await asyncio.to_thread(PushServices.start, tmp_path / "push", only="webpush")
    try:
        yield started
    finally:
        started.stop()


async def test_the_desk_shows_how_each_line_was_pushed(
    web_push: PushServices, stack: Stack, chromium: Browser
) -> None:
    stack.worker(**web_push.env)
    node = stack.service(**web_push.env)
    assert web_push.webpush is not None
    targets = await asyncio.to_thread(web_push.webpush.targets, 4)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        for target in targets:
            body = registration_body("webpush", target, editions=["en", "ar"])
            assert (await client.post("/api/v1/push/registrations", json=body)).status_code == 201
    await asyncio.to_thread(web_push.webpush.faults, "gone", [targets[0]["endpoint"]])
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    desk = await chromium.new_page()
    try:
        await sign_in_desk(desk, node.url, chief)
        await desk.get_by_label("Headline").fill("Ceasefire announced in the north")
        await desk.get_by_label("Flash").check()
        await desk.get_by_role("button", name="Post line").click()
        push = desk.locator("#live-lines .push").first
        await expect(push).to_have_text(
            re.compile(r"^push: 3 of 4 accepted · 1 removed · 0 failed · \d+\.\d s$"), timeout=15_000
        )
        # A routine line is pushed to nobody (every registration wants flash only): no push shown.
        await desk.get_by_label("Headline").fill("Weather: clear skies tomorrow")
        await desk.get_by_label("Routine").check()
        await desk.get_by_role("button", name="Post line").click()
        routine = desk.locator("#live-lines li", has_text="Weather: clear skies")
        await expect(routine.locator(".reach")).to_be_visible()
        await expect(routine.locator(".push")).to_have_count(0)
    finally:
        await desk.close()
    # The Arabic desk says the same in Arabic (the gone target is removed now: 3 targets).
    desk = await chromium.new_page()
    try:
        await sign_in_desk(desk, node.url, chief)
        await desk.locator("#edition").select_option("ar")
        await desk.locator("#text").fill("إعلان وقف إطلاق النار في الشمال")
        await desk.locator("input[name=urgency][value=flash]").check()
        await desk.locator("#post").click()
        await expect(desk.locator("#live-lines .push").first).to_have_text(
            re.compile(r"^الإشعارات: قُبل 3 من 3 · أُزيل 0 · فشل 0 · \d+\.\d ث$"), timeout=15_000
        )
    finally:
        await desk.close()
