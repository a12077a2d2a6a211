"""A node whose Redis is down is not stormed by its readers (issue 8, finding 5).

The node stays up and refuses each new reader: over WebSocket with `hello` then close 1013
before `subscribed`, over SSE with 503 and `Retry-After`. Every first-party client then waits
at least 2.5 s before each new attempt (docs/protocol.md, section 11), and a greeting never
resets its backoff, so over 10 s each makes at most 5 attempts (the formula gives 3 to 4),
where the old rule (reset on `subscribed`) made about 5 a second. Attempts are counted in a
relay in front of the node, one per client, by the requests it forwards.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from playwright.async_api import expect

from flashwire.client import TickerClient
from flashwire.dev.redis_server import RedisProcess
from tests.browser import browser
from tests.conftest import Stack
from tests.partner import PartnerSite
from tests.test_clients_contract import Consumer, embed_widget, open_page, proxy_to, within

# Heavy on CPU and timing: these run one after another on one test process (`-n 2 --dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

WINDOW_S = 10.0


async def _wait_unavailable(url: str, timeout_s: float = 15.0) -> None:
    """Until the node's /healthz says it cannot reach Redis."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            if (await client.get("/healthz")).status_code == 503:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("/healthz still answers 200 with Redis down")


async def test_readers_of_a_node_whose_redis_is_down_retry_at_most_five_times_in_ten_seconds(
    stack: Stack, redis_server: RedisProcess, partner: PartnerSite
) -> None:
    """With the node up and its Redis killed, TickerClient, LiveTicker and the widget (over
    WebSocket, and over SSE where WebSocket is missing) each try at most 5 times in 10 s,
    the widgets keep their transport, and the node logs no traceback."""
    node = stack.service()
    redis_server.kill()
    await _wait_unavailable(node.url)
    async with (
        proxy_to(node.port) as for_python,
        proxy_to(node.port) as for_live,
        proxy_to(node.port) as for_widget,
        proxy_to(node.port) as for_sse_widget,
        browser() as chromium,
    ):
        consumer = Consumer(TickerClient(for_python.ws_url, editions=["en"]))
        try:
            live = await open_page(chromium, f"{for_live.url}/live?editions=en")
            widget = await open_page(
                chromium, embed_widget(partner, "ws.html", node.url, f'server="{for_widget.url}"')
            )
            sse_widget = await open_page(
                chromium,
                embed_widget(partner, "sse.html", node.url, f'server="{for_sse_widget.url}"'),
                "delete window.WebSocket;",
            )
            await asyncio.sleep(WINDOW_S + 1)
        finally:
            await consumer.stop()
        await expect(widget.locator("flash-ticker")).to_have_attribute("data-transport", "ws")
        await expect(sse_widget.locator("flash-ticker")).to_have_attribute("data-transport", "sse")
        assert await live.locator("#status").inner_text() != "live"
        attempts = {
            "TickerClient": for_python.times("/ws"),
            "LiveTicker": for_live.times("/ws"),
            "widget (WebSocket)": for_widget.times("/ws"),
            "widget (SSE)": for_sse_widget.times("/sse"),
        }
    for name, times in attempts.items():
        in_window = within(times, WINDOW_S)
        assert 2 <= len(in_window) <= 5, (name, [round(at - times[0], 2) for at in times])
    assert for_sse_widget.times("/ws") == [], "the SSE widget never tried WebSocket"
    log = node.log()
    assert "Traceback" not in log, log
