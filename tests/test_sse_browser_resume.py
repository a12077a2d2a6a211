"""A real browser's EventSource, dropped in the middle of a two-edition replay, loses nothing.

The browser keeps only the last `id:` it saw and sends it back as Last-Event-ID when it
reconnects by itself. That id must therefore name every edition's cursor at every moment,
including while the first edition's replay is still being sent (issue 8, finding 2).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.browser import browser
from tests.conftest import Stack, post_line
from tests.proxy import CuttingProxy

pytestmark = pytest.mark.slow

RECORDER = """
(url) => {
  window.received = [];
  const source = new EventSource(url);
  source.onmessage = (event) => window.received.push({data: JSON.parse(event.data), id: event.lastEventId});
  source.onerror = () => window.received.push({error: true});
}
"""


def _is_line_event(block: bytes) -> bool:
    return b'"type":"line"' in block


async def _received(page: Any) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = await page.evaluate("window.received")
    return received


async def _wait_for(page: Any, predicate: Any, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        received = await _received(page)
        if predicate(received):
            return received
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"browser did not get there; it received {received}")
        await asyncio.sleep(0.1)


async def _ticker_length(stack: Stack, edition: str) -> int:
    redis = stack.redis()
    try:
        return int(await redis.xlen(stack.keys.ticker(edition)))
    finally:
        await redis.aclose()


async def test_event_source_dropped_during_a_replay_resumes_every_edition_exactly(stack: Stack) -> None:
    """Chromium's EventSource on /sse?editions=ar,en, cut while the `ar` replay is on its way, comes back
    with its own Last-Event-ID and ends with every event of both editions exactly once, and no snapshot
    after the first two."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("chief", ["ar", "en"])
    proxy = await CuttingProxy(node.port).start()
    try:
        async with browser() as chromium:
            page = await chromium.new_page()
            # The page comes from the node itself; only the EventSource goes through the proxy (an allowed
            # cross-origin stream), so every proxied connection is one of its requests.
            await page.goto(f"{node.url}/healthz")
            # Connection 1 is held once both snapshots are in; connection 2 is cut right after the first
            # event of the `ar` replay; connection 3 runs freely.
            proxy.plans = [(False, None), (False, _is_line_event), (False, None)]
            await page.evaluate(RECORDER, f"{proxy.url}/sse?editions=ar,en")
            await _wait_for(
                page, lambda got: sum(m.get("data", {}).get("type") == "snapshot" for m in got) == 2
            )
            first = proxy.connections[0]
            proxy.hold(first)
            async with httpx.AsyncClient(base_url=node.url) as client:
                ar_1 = await post_line(client, editor, "عاجل: الخبر الأول", edition="ar")
                await post_line(client, editor, "عاجل: الخبر الثاني", edition="ar")
                await post_line(client, editor, "First English line", edition="en")
                kill = await client.post(
                    f"/api/v1/lines/{ar_1['id']}/retraction",
                    json={"reason": "Wrong figure"},
                    headers={"Authorization": f"Bearer {editor}"},
                )
                assert kill.status_code == 201, kill.text
                await post_line(client, editor, "Second English line", edition="en")
            for _ in range(100):
                if await _ticker_length(stack, "ar") == 3 and await _ticker_length(stack, "en") == 2:
                    break
                await asyncio.sleep(0.05)
            first.close()  # the network drops; nothing posted above reached the browser
            received = await _wait_for(
                page,
                lambda got: (
                    sum(m.get("data", {}).get("type") in ("line", "update", "retract") for m in got) >= 5
                ),
                timeout_s=20,
            )
    finally:
        await proxy.stop()
    assert len(proxy.connections) >= 3, "the browser reconnected twice by itself"
    second_request_cut = proxy.connections[1].closed.is_set()
    assert second_request_cut
    messages = [m["data"] for m in received if "data" in m]
    events = [m for m in messages if m["type"] in ("line", "update", "retract")]
    snapshots = [m for m in messages if m["type"] == "snapshot"]
    assert [(s["edition"], s["reset"]) for s in snapshots] == [("ar", False), ("en", False)]
    keys = [(e["edition"], e["cursor"]) for e in events]
    assert len(keys) == len(set(keys)) == 5, f"duplicates or extras: {keys}"
    by_edition = {
        edition: [(e["type"], e.get("line", {}).get("text")) for e in events if e["edition"] == edition]
        for edition in ("ar", "en")
    }
    assert by_edition["ar"] == [
        ("line", "عاجل: الخبر الأول"),
        ("line", "عاجل: الخبر الثاني"),
        ("retract", "عاجل: الخبر الأول"),
    ]
    assert by_edition["en"] == [("line", "First English line"), ("line", "Second English line")]
    # From the second snapshot on, every id the browser was given names both editions, also on the
    # resumed connections' `subscribed` and replay: it could resume either edition from any point.
    second_snapshot = next(i for i, m in enumerate(received) if m.get("data") is snapshots[1])
    ids = [
        m["id"] for m in received[second_snapshot:] if m.get("data", {}).get("type") not in (None, "hello")
    ]
    assert ids and all(i.startswith("ar:") and ",en:" in i for i in ids), ids
