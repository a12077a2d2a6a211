"""Liveness that tells the truth (issue 8): /healthz, /readyz and /metrics report stalled publishing,
and the desk shows a banner while it lasts, in a real chromium on a phone-sized Arabic desk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, expect

from tests.browser import browser, screenshot
from tests.conftest import ServiceNode, Stack, post_line

pytestmark = pytest.mark.slow

PHONE: ViewportSize = {"width": 390, "height": 844}


async def _health_until(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    """Poll /healthz until `check` holds for its body; fail with the last body after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await client.get("/healthz")).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


def _gauge(text: str, name: str) -> float | None:
    values = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) <= 1, text
    return float(values[0]) if values else None


async def test_healthz_degrades_within_10s_of_the_last_worker_dying(stack: Stack) -> None:
    """With two workers, stopping one keeps /healthz ok; SIGKILLing the last turns it degraded within
    10 s (no worker alive, said in words); starting a worker makes it ok again."""
    first, second = stack.worker(), stack.worker()
    node = stack.service()
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        health = await _health_until(client, lambda h: h["workers_alive"] == 2, 15)
        assert health["status"] == "ok" and health["problems"] == [] and health["desk_lag_s"] == 0
        assert health["node"]
        first.terminate()
        health = await _health_until(client, lambda h: h["workers_alive"] == 1, 5)
        assert health["status"] == "ok"
        second.kill()
        killed_at = time.monotonic()
        health = await _health_until(client, lambda h: h["status"] == "degraded", 10)
        assert time.monotonic() - killed_at < 10
        assert health["workers_alive"] == 0
        assert any("no worker is running" in problem for problem in health["problems"]), health
        response = await client.get("/healthz")
        assert response.status_code == 200, "degraded is still alive: the node serves readers"
        stack.worker()
        health = await _health_until(client, lambda h: h["status"] == "ok", 15)
        assert health["workers_alive"] == 1 and health["problems"] == []


async def test_desk_lag_is_reported_by_healthz_and_metrics(stack: Stack) -> None:
    """A line waiting for a worker shows as desk lag: degraded past 5 s in /healthz, the gauge in
    /metrics; a worker applies it and the lag drops to 0."""
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        metrics = (await client.get("/metrics")).text
        assert _gauge(metrics, "flashwire_desk_lag_seconds") == 0
        assert _gauge(metrics, "flashwire_workers_alive") == 0
        assert _gauge(metrics, "flashwire_redis_up") == 1
        assert _gauge(metrics, "flashwire_connections") == 0, "the existing metrics are still there"
        await post_line(client, chief, "Waiting for a worker")
        health = await _health_until(client, lambda h: h["desk_lag_s"] > 5, 10)
        assert health["status"] == "degraded"
        assert any("publishing is behind" in problem for problem in health["problems"]), health
        lag = _gauge((await client.get("/metrics")).text, "flashwire_desk_lag_seconds")
        assert lag is not None and lag > 5
        assert "# TYPE flashwire_desk_lag_seconds gauge" in metrics
        stack.worker()
        health = await _health_until(client, lambda h: h["status"] == "ok", 15)
        assert health["desk_lag_s"] == 0
        metrics = (await client.get("/metrics")).text
        assert _gauge(metrics, "flashwire_desk_lag_seconds") == 0
        assert _gauge(metrics, "flashwire_workers_alive") == 1


async def test_readyz_follows_redis_not_publishing(stack: Stack) -> None:
    """/readyz stays 200 when no worker runs (publishing is not the node's to fix) and turns 503 with
    Redis gone, as /healthz does ('unavailable'); both recover when Redis is back."""
    worker = stack.worker()
    node = stack.service()
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        worker.terminate()
        await _health_until(client, lambda h: h["status"] == "degraded", 10)
        assert (await client.get("/readyz")).status_code == 200
        stack.redis_server.stop()
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unready", ready.text
        assert ready.json()["problems"]
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
        metrics = (await client.get("/metrics")).text
        assert _gauge(metrics, "flashwire_redis_up") == 0
        assert _gauge(metrics, "flashwire_desk_lag_seconds") is None, "unknown, so not reported"
        await asyncio.to_thread(stack.redis_server.start)
        deadline = time.monotonic() + 15
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, (await client.get("/readyz")).text
            await asyncio.sleep(0.2)
        assert (await client.get("/healthz")).status_code == 200


async def _sign_in_on_phone(node: ServiceNode, token: str, page: Page) -> None:
    page.set_default_timeout(10_000)
    # The page's timers run on Playwright's clock: time flows as usual, and `_poll_now` can bring
    # the desk's next /healthz poll forward (see there).
    await page.clock.install()
    await page.goto(f"{node.url}/desk")
    await page.get_by_label("Editor token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#desk")).to_be_visible()


# The desk polls /healthz every 5 s (web/desk/desk.js, HEALTH_POLL_MS).
DESK_HEALTH_POLL_MS = 5_000


async def _poll_now(page: Page, client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]) -> None:
    """Once /healthz shows the new state (`check`), fire the desk's pending health poll at once.

    The desk's own timer still makes the poll (fast_forward only runs timers the page set, at most
    once each), so a desk that stopped polling would still never show the change; what is skipped
    is only the wait of up to one poll period after the node knows. A poll already in flight is
    followed by the next one in real time, 5 s later: slower, not wrong.
    """
    await _health_until(client, check, 20)
    await page.clock.fast_forward(DESK_HEALTH_POLL_MS)


async def test_desk_banner_shows_while_publishing_is_stalled(stack: Stack) -> None:
    """On a phone, in the Arabic edition, the desk shows a banner soon after the last worker dies
    (and keeps it in view while scrolling), a different one while the store is unreachable, and
    hides it when publishing works again."""
    worker = stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["ar", "en"], name="Rania")
    async with browser() as chromium:
        phone = await chromium.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
        await _sign_in_on_phone(node, editor, phone)
        await phone.locator("#edition").select_option("ar")
        await phone.locator("#ui-language").select_option("en")  # the Arabic edition's desk in English
        banner = phone.locator("#health")
        await expect(banner).to_be_hidden()
        worker.kill()
        # Stale after 5 s, polled every 5 s: well within 15 s.
        await expect(banner).to_be_visible(timeout=15_000)
        await expect(banner).to_contain_text("Publishing is stalled: no worker is running.")
        await expect(banner).to_contain_text("Lines you post are queued and will go out when it recovers.")
        text = "عاجل: البرلمان يقر الميزانية"
        await phone.get_by_label("Headline").fill(text)
        await phone.get_by_role("button", name="Post line").click()
        await expect(phone.locator("#notice")).to_have_text("Posted.")
        await phone.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        await expect(banner).to_be_in_viewport()
        box = await banner.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await screenshot(phone, "desk-stalled-phone-ar.png")
        # The first change above was seen in real time (stale after 5 s, then the next poll); the
        # three below bring the desk's next poll forward once the node reports the change.
        async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
            stack.worker()
            await _poll_now(phone, client, lambda h: h.get("status") == "ok")
            await expect(banner).to_be_hidden(timeout=15_000)
            await expect(phone.locator("#readers .fw-line")).to_contain_text(text)
            stack.redis_server.stop()
            await _poll_now(phone, client, lambda h: h.get("status") == "unavailable")
            await expect(banner).to_be_visible(timeout=10_000)
            await expect(banner).to_contain_text("The newsroom store is unreachable")
            await asyncio.to_thread(stack.redis_server.start)
            await _poll_now(phone, client, lambda h: h.get("status") == "ok")
            await expect(banner).to_be_hidden(timeout=15_000)
