"""Headless Debian chromium driven by Playwright, for tests of the pages under web/."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright, expect

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# The desk's ticker status once its connection delivers: "live" in the desk's language
# (web/desk/messages.js statusLive).
DESK_LIVE = re.compile("^(live|مباشر|en directo)$")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium (installed by `make test`), or $FLASHWIRE_CHROMIUM."""
    path = os.environ.get("FLASHWIRE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("chromium is not installed: run `make test`, which installs Debian's chromium")
    return path


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    """A headless chromium for one test (or, through the `chromium` fixture of tests/conftest.py, for
    every test of a module that runs on the module's event loop)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Keep a screenshot under test-artifacts/ (`full_page=False`: the first screen only, what a
    phone shows)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def sign_in_desk(page: Page, base_url: str, token: str) -> None:
    """Open the desk at `base_url`, sign in with `token` (by the fields' ids, so in any language)
    and wait until it has loaded: shown, and its own ticker live."""
    page.set_default_timeout(10_000)
    await page.goto(f"{base_url}/desk")
    await page.locator("#token").fill(token)
    await page.locator("#sign-in-button").click()
    await expect(page.locator("#desk")).to_be_visible()
    await expect(page.locator("#reader-status")).to_have_text(DESK_LIVE)
