"""The desk page tells the editor when a post is on the primary but not yet on a replica (a 202)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser import sign_in_desk
from tests.conftest import Stack
from tests.redis_sentinel import Replicated

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Replicated]:
    topology = Replicated(tmp_path / "redis", sentinels=False)
    yield topology
    topology.close()


async def test_a_post_not_yet_on_a_replica_is_shown_as_not_yet_safe(
    pair: Replicated, tmp_path: Path, chromium: Browser
) -> None:
    """WAIT=1: with the replica up the desk says "Posted."; with it cut off (frozen, its link dropped)
    the post is answered 202 and the desk says it is posted but not yet safe on a replica."""
    stack = Stack(pair.primary, tmp_path)  # type: ignore[arg-type]
    try:
        node = stack.service(FLASHWIRE_WAIT_REPLICAS="1", FLASHWIRE_WAIT_TIMEOUT_MS="200")
        chief = await stack.token("chief", ["en"], name="Chiara")
        desk = await chromium.new_page()
        await sign_in_desk(desk, node.url, chief)
        await desk.get_by_label("Headline").fill("On a replica before the answer")
        await desk.get_by_role("button", name="Post line").click()
        await expect(desk.locator("#notice")).to_have_text("Posted.")

        pair.replicas[0].freeze()
        assert pair.primary.command("CLIENT", "KILL", "TYPE", "replica").startswith(b":1")
        await desk.get_by_label("Headline").fill("Only on the primary for now")
        await desk.get_by_role("button", name="Post line").click()
        await expect(desk.locator("#notice")).to_have_text(
            "Posted. Not yet safe on a replica: it would be lost if the store failed now."
        )
    finally:
        pair.replicas[0].thaw()
        stack.close()
