"""A reader's outbox: the bounded queue between the hub and one connection's sender.

The hub only ever appends to an outbox (`offer`) and never awaits a reader, so a reader
that cannot keep up overflows its own outbox and is closed while the others carry on
(websockets' broadcast guide, "slow consumers"). Once a reader has caught up and its
transport can take frames directly (service/wire.py), the hub writes to the socket
instead, and the outbox only carries what a `Reset` needs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from flashwire.core.epoch import HISTORY_CHANGED
from flashwire.service.events import Event


@dataclass(frozen=True, slots=True)
class Reset:
    """An outbox item: the ticker history changed. Send a reset snapshot of every subscribed
    edition, caught up to `positions` (edition -> the hub's position when it reset)."""

    positions: dict[str, str]
    reason: str = HISTORY_CHANGED


# An event to send, a ready frame (heartbeat, pong) or a reset.
OutboxItem = Event | str | Reset


class Outbox:
    """A subscriber's bounded queue of frames; overflowing it marks the subscriber slow.

    A list and a future made only while waiting: thousands of these sit idle, so they
    are kept small (a deque and an asyncio.Event cost about 1.5 KiB more each).
    """

    __slots__ = ("_items", "_max", "_waiter", "overflowed")

    def __init__(self, max_items: int) -> None:
        self._items: list[OutboxItem] = []
        self._max = max_items
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def offer(self, item: OutboxItem) -> bool:
        """Queue an item; False (and the subscriber is marked slow) if the outbox is full."""
        if self.overflowed:
            return False
        if len(self._items) >= self._max:
            self.overflowed = True
            self._items = []
            self._wake()
            return False
        self._items.append(item)
        self._wake()
        return True

    def drain(self) -> list[OutboxItem]:
        """Return and clear whatever is queued, without waiting."""
        items, self._items = self._items, []
        return items

    def restart_with(self, reset: Reset) -> None:
        """Drop the queued events (they belong to a history that is gone), keep heartbeats and
        pongs, and queue `reset`. An overflowed outbox stays overflowed: that reader is closing."""
        if self.overflowed:
            return
        self._items = [item for item in self._items if isinstance(item, str)]
        self._items.append(reset)
        self._wake()

    async def take(self) -> list[OutboxItem]:
        """Wait for items and return all queued ones (empty only once overflowed)."""
        while not self._items and not self.overflowed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.drain()
