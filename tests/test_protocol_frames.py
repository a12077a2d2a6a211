"""Every frame a real node sends, over WebSocket and SSE, matches its schema in the AsyncAPI document.

A worker and a service node run as processes; the test drives the desk through the API (post,
correct out of a reader's filter, pin, move the expiry, kill, let a line expire), pings, waits
for heartbeats and asks for reset snapshots, and records every frame of four readers. Each
frame is validated against the payload schema of its `type` in the document
(service/asyncapi.py, generated from flashwire/core/protocol.py), closed to the fields the
schemas list (`tests.protocol_schemas.closed`; the served document is open, as readers must
ignore unknown fields): a frame that drifts from its description, a field the document does
not list, or a message type the document lacks, fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from flashwire.core.cursors import is_cursor
from flashwire.core.protocol import CLIENT_MESSAGES, SERVER_MESSAGES, SSE_MESSAGES
from flashwire.core.settings import Settings
from flashwire.service.asyncapi import asyncapi_document
from tests.conftest import Reader, Stack, auth, open_reader, post_line
from tests.protocol_schemas import closed, payload_validator

HEARTBEAT_S = "0.5"
# Ahead of any entry the test writes: resuming from it gets a reset snapshot (docs/protocol.md 8.3).
FUTURE_CURSOR = "99999999999999-0"


class SseReader:
    """An SSE stream read in a task: every event's `id` and `data` lines, in order."""

    def __init__(self, client: httpx.AsyncClient, params: dict[str, str]) -> None:
        self.events: list[dict[str, list[str]]] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, params))

    async def _read(self, client: httpx.AsyncClient, params: dict[str, str]) -> None:
        async with client.stream("GET", "/sse", params=params) as response:
            assert response.status_code == 200
            event: dict[str, list[str]] = {}
            async for line in response.aiter_lines():
                if not line:
                    if event:
                        self.events.append(event)
                        self._arrived.set()
                    event = {}
                    continue
                name, _, value = line.partition(":")
                event.setdefault(name, []).append(value.removeprefix(" "))

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(data) for event in self.events for data in event.get("data", [])]

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                self._arrived.clear()
                if any(predicate(m) for m in self.messages()):
                    return
                await self._arrived.wait()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _mismatches(document: dict[str, Any], frames: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every frame that has no message in the document or does not match its payload schema."""
    validators: dict[str, Any] = {}
    found: list[str] = []
    for where, frame in frames:
        kind = frame.get("type")
        if kind not in document["components"]["messages"]:
            found.append(f"{where}: no message {kind!r} in the document: {frame}")
            continue
        validator = validators.setdefault(kind, payload_validator(document, kind))
        for error in validator.iter_errors(frame):
            path = "/".join(map(str, error.absolute_path))
            found.append(f"{where} {kind} at {path or '(top)'}: {error.message}")
    return found


async def test_every_frame_over_websocket_and_sse_matches_the_asyncapi_document(
    stack: Stack, readers: list[Reader]
) -> None:
    """hello, subscribed, snapshot (plain and reset), line, update (correction, pin, expiry),
    retract (killed, expired, filtered), heartbeat and pong, as real frames, all match their schemas;
    so do the subscribe and ping this test sends."""
    stack.worker()
    node = stack.service(FLASHWIRE_HEARTBEAT_S=HEARTBEAT_S)
    document = closed(dict(asyncapi_document(Settings.from_env({"FLASHWIRE_HEARTBEAT_S": HEARTBEAT_S}))))
    chief = await stack.token("chief", ["en"])
    everything = await open_reader(node.ws_url, "editions=en")
    politics = await open_reader(node.ws_url, "editions=en&topics=politics")
    readers.extend([everything, politics])
    sent: list[dict[str, Any]] = [
        {"type": "subscribe", "editions": ["en"], "topics": [], "min_urgency": "routine", "since": None},
        {"type": "ping"},
    ]
    async with connect(node.ws_url, compression=None) as by_message:
        subscriber = Reader(by_message)
        await subscriber.next_of("hello")
        await by_message.send(orjson.dumps(sent[0]).decode())
        await subscriber.next_of("snapshot")
        await by_message.send(orjson.dumps(sent[1]).decode())
        await subscriber.next_of("pong")
    async with httpx.AsyncClient(base_url=node.url, timeout=httpx.Timeout(5, read=30)) as client:
        sse = SseReader(client, {"editions": "en"})
        sse_reset = SseReader(client, {"editions": "en", "since": FUTURE_CURSOR})
        try:
            await sse.wait_for(lambda m: m["type"] == "snapshot")
            await everything.next_of("snapshot")
            await politics.next_of("snapshot")
            posted = await post_line(
                client, chief, "Parliament dissolved", urgency="flash", topics=["politics"]
            )
            soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
            brief = await post_line(client, chief, "Brief alert", topics=["economy"], expires_at=soon)
            line_id = posted["id"]
            for action, body in [
                ("corrections", {"text": "Parliament dissolved by decree", "topics": ["economy"]}),
                ("pin", None),
                ("expiry", {"expires_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}),
                ("retraction", {"reason": "Misattributed"}),
            ]:
                response = await client.post(
                    f"/api/v1/lines/{line_id}/{action}", json=body, headers=auth(chief)
                )
                assert response.status_code == 201, (action, response.text)
            retracts = [m async for m in _until(everything, "retract", 2)]
            assert {m["reason"] for m in retracts} == {"killed", "expired"}, retracts
            assert {m["id"] for m in retracts} == {line_id, brief["id"]}
            withdrawn = await politics.next_of("retract")
            assert withdrawn["reason"] == "filtered"
            await everything.ws.send('{"type":"ping"}')
            await everything.next_of("pong")
            await everything.next_of("heartbeat")
            await sse.wait_for(lambda m: m["type"] == "retract" and m["reason"] == "expired")
            await sse.wait_for(lambda m: m["type"] == "heartbeat")
            await sse_reset.wait_for(lambda m: m["type"] == "snapshot")
            resetting = await open_reader(node.ws_url, f"editions=en&since={FUTURE_CURSOR}")
            readers.append(resetting)
            await resetting.next_of("snapshot")
        finally:
            await sse.close()
            await sse_reset.close()

    ws_frames = [
        (f"ws reader {i}", m)
        for i, reader in enumerate([everything, politics, subscriber, resetting])
        for m in reader.messages
    ]
    sse_frames = [(f"sse reader {i}", m) for i, s in enumerate([sse, sse_reset]) for m in s.messages()]
    assert _mismatches(document, ws_frames + sse_frames) == []
    assert _mismatches(document, [("client", message) for message in sent]) == []

    # Every message type was seen, so every schema met a real frame.
    ws_types = {m["type"] for _, m in ws_frames}
    assert ws_types == set(SERVER_MESSAGES), ws_types
    assert {m["type"] for _, m in sse_frames} == set(SSE_MESSAGES)
    assert {m["type"] for m in sent} == set(CLIENT_MESSAGES)
    updates = {m["change"] for _, m in ws_frames if m["type"] == "update"}
    assert updates == {"correction", "pin", "expiry"}, updates
    resets = [m for _, m in ws_frames + sse_frames if m["type"] == "snapshot" and m["reset"]]
    assert len(resets) == 2 and all(m["reason"] for m in resets), resets
    # SSE framing: one `data:` line per event; every `id` is a cursor set of valid cursors.
    for event in sse.events + sse_reset.events:
        assert len(event.get("data", [])) <= 1, event
        for token in event.get("id", []):
            pairs = [pair.partition(":") for pair in token.split(",")]
            assert all(edition and sep and is_cursor(cursor) for edition, sep, cursor in pairs), token


async def _until(reader: Reader, kind: str, count: int, timeout_s: float = 10.0) -> Any:
    """The next `count` messages of one type (the others are still recorded by the reader)."""
    for _ in range(count):
        yield await reader.next_of(kind, timeout_s=timeout_s)
