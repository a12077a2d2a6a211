"""A reference reader client: an async iterator of ticker events with resume and backoff.

    async for event in TickerClient("ws://127.0.0.1:8000/ws", editions=["en"]).events():
        print(event["type"], event.get("line", {}).get("text"))

It keeps the last cursor of every edition and, when the connection drops,
reconnects with jittered exponential backoff and `since=` those cursors, so the
events it yields have no gap and no duplicate across reconnects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

# Close codes after which reconnecting with the same request cannot help.
FATAL_CLOSE_CODES = frozenset({4400, 4403})
LIVE_TYPES = frozenset({"line", "update", "retract"})


class SubscriptionRefused(Exception):
    """The server closed with a code that means the request itself is wrong."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"server refused the subscription ({code}): {reason}")
        self.code = code
        self.reason = reason


def _cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


class TickerClient:
    """Subscribe to a Flashwire node and yield its messages, resuming after every drop."""

    def __init__(
        self,
        url: str,
        *,
        editions: list[str] | None = None,
        topics: list[str] | None = None,
        min_urgency: str | None = None,
        since: dict[str, str] | None = None,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 15.0,
        include_control: bool = False,
    ) -> None:
        self.url = url
        self.editions = editions or []
        self.topics = topics or []
        self.min_urgency = min_urgency
        self.cursors: dict[str, str] = dict(since or {})
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.include_control = include_control
        self.reconnects = 0

    def _request_url(self) -> str:
        query: dict[str, str] = {}
        if self.editions:
            query["editions"] = ",".join(self.editions)
        if self.topics:
            query["topics"] = ",".join(self.topics)
        if self.min_urgency:
            query["min_urgency"] = self.min_urgency
        if self.cursors:
            query["since"] = ",".join(f"{e}:{c}" for e, c in sorted(self.cursors.items()))
        if not query:
            query["editions"] = ""
        return f"{self.url}?{urlencode(query, safe=',:')}"

    def _accept(self, message: dict[str, Any]) -> bool:
        """Track cursors; False for an event already seen (defence in depth)."""
        kind = message.get("type")
        edition = message.get("edition")
        cursor = message.get("cursor")
        if not isinstance(edition, str) or not isinstance(cursor, str):
            return True
        if kind in LIVE_TYPES:
            known = self.cursors.get(edition)
            if known is not None and _cursor_key(cursor) <= _cursor_key(known):
                return False
        if kind in LIVE_TYPES or kind == "snapshot":
            self.cursors[edition] = cursor
        return True

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Yield snapshot and line/update/retract messages forever (and control ones if asked)."""
        attempt = 0
        while True:
            try:
                async with connect(self._request_url(), compression=None, max_size=2**22) as ws:
                    async for raw in ws:
                        message = orjson.loads(raw)
                        attempt = 0
                        if not self._accept(message):
                            continue
                        if self.include_control or message.get("type") in LIVE_TYPES | {"snapshot"}:
                            yield message
            except ConnectionClosed as closed:
                received = closed.rcvd
                if received is not None and received.code in FATAL_CLOSE_CODES:
                    raise SubscriptionRefused(received.code, received.reason) from None
            except (TimeoutError, OSError, InvalidHandshake) as exc:
                if isinstance(exc, InvalidURI):
                    raise
            attempt += 1
            self.reconnects += 1
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt - 1, 10))
            await asyncio.sleep(random.uniform(delay / 2, delay))
