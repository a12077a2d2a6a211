"""Lines expire at their expiry time: readers drop them, snapshots no longer hold them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import Reader, Stack, auth, open_reader, post_line


async def test_line_expires_at_its_time_and_a_correction_can_extend_it(
    stack: Stack, readers: list[Reader]
) -> None:
    """An expiring line is retracted with reason 'expired' about on time; one whose expiry a
    correction moved later stays live until the new time."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")
    soon = datetime.now(UTC) + timedelta(seconds=2)
    async with httpx.AsyncClient(base_url=node.url) as client:
        short = await post_line(client, editor, "short-lived", expires_at=soon.isoformat())
        extended = await post_line(client, editor, "extended", expires_at=soon.isoformat())
        later = datetime.now(UTC) + timedelta(seconds=4)
        response = await client.post(
            f"/api/v1/lines/{extended['id']}/corrections",
            json={"expires_at": later.isoformat()},
            headers=auth(editor),
        )
        assert response.status_code == 201, response.text
        await reader.events(3)
        first = await reader.next_of("retract", timeout_s=6)
        first_at = time.time()
        assert first["id"] == short["id"] and first["reason"] == "expired"
        assert soon.timestamp() <= first_at < soon.timestamp() + 2.0
        second = await reader.next_of("retract", timeout_s=6)
        assert second["id"] == extended["id"] and second["reason"] == "expired"
        assert time.time() >= later.timestamp()
        live = (await client.get("/api/v1/editions/en/lines", headers=auth(editor))).json()
        assert live["lines"] == []
