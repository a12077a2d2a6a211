"""The two things a WebSocket connection waits on, made small: its queue of received messages and
its "writable" flag.

uvicorn's websockets-sansio protocol gives every connection an `asyncio.Queue` (the ASGI receive
queue) and an `asyncio.Event` (`writable`, cleared while the transport's buffer is over its
high-water mark). Each of them holds empty `collections.deque`s (three in the queue, plus an
`asyncio.Event` of its own for `join`; one in the event) of 760 bytes each: about 3.8 KB of an idle
reader's memory, for a queue that is empty and an event that is set nearly all of a reader's life
(tracemalloc, bench/connection_memory.py; docs/benchmarks.md). These do the same work with a
list and a future made only while someone waits: about 150 bytes while idle.

Only what uvicorn's protocol and ours use is provided: `put_nowait`, `get`, `empty` and `qsize`
(`asyncio.Queue`), `set`, `clear`, `is_set` and `wait` (`asyncio.Event`). One connection has one
consumer of its messages (the application's `receive`), but any number of waiters on `writable`
(the application's `send`s) are served, as asyncio's are.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class MessageQueue(Generic[T]):
    """An unbounded FIFO queue for one consumer (`asyncio.Queue`'s methods that uvicorn uses)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        """Append `item` and wake the consumer."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, once there is one. A cancelled `get` takes nothing from the queue."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        """Is nothing queued?"""
        return not self._items

    def qsize(self) -> int:
        """How many items are queued."""
        return len(self._items)


class Flag:
    """A set/clear flag that coroutines can wait for (`asyncio.Event`'s methods); starts set."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Is the flag set?"""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Clear the flag: `wait` blocks until it is set again."""
        self._set = False

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
