"""What the widget's browser tests check on the server side: how many reader connections a page holds.

The node's own count (`flashwire_connections` on /metrics) is the truth a page cannot fake; through
tests/proxy.py the proxy's list of open streams is checked too.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import ServiceNode, eventually, metric
from tests.proxy import CuttingProxy

# Run in the page: from now on, every change of any ticker's polite live region goes, in order (its
# text after the change), into window.__announced.
ANNOUNCEMENTS = """
() => {
  window.__announced = [];
  for (const ticker of document.querySelectorAll("flash-ticker")) {
    const live = ticker.shadowRoot.querySelector("[aria-live=polite]");
    new MutationObserver(() => window.__announced.push(live.textContent))
      .observe(live, { childList: true, characterData: true, subtree: true });
  }
}
"""


async def connections(node: ServiceNode) -> int:
    """The node's open reader connections (WebSocket and SSE)."""
    async with httpx.AsyncClient(base_url=node.url) as client:
        return int(metric((await client.get("/metrics")).text, "flashwire_connections"))


async def holds(node: ServiceNode, count: int, proxy: CuttingProxy | None = None) -> None:
    """The node holds exactly `count` reader connections (through the proxy too, if there is one),
    and still does a moment later: no other connection is on its way."""

    async def exactly() -> bool:
        through = proxy is None or len(proxy.streams()) == count
        return await connections(node) == count and through

    for _ in range(2):
        await eventually(exactly, timeout_s=10)
        await asyncio.sleep(1.0)
    assert await connections(node) == count


async def one_connection(node: ServiceNode, proxy: CuttingProxy | None = None) -> None:
    """One page, one connection."""
    await holds(node, 1, proxy)
