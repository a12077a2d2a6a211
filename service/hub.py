"""The hub: one Redis reader per process feeding every local subscriber.

One task blocks on XREAD over all edition tickers and hands each new event to
the subscribers of that edition whose filter matches, by appending it to their
bounded outbox. Nothing here awaits a subscriber: a reader that cannot keep up
overflows its own outbox and is closed, while the others carry on.

Replays (resume from a cursor) are served from an in-memory ring of recent
events when it reaches back far enough, and otherwise from Redis with reads
coalesced per (edition, cursor), so a thousand clients resuming from the same
cursor after a restart cause one XRANGE, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.clock import now_ms
from service.events import HEARTBEAT_FRAME, HEARTBEAT_WIRE, Event, Filter, cursor_key
from service.keys import Keys
from service.settings import Settings
from service.wire import OPEN, SLOW, DirectWriter

if TYPE_CHECKING:
    from service.reach import ReachRecorder

log = logging.getLogger(__name__)
_T = TypeVar("_T")

READ_BLOCK_MS = 5_000
READ_COUNT = 1_000
REPLAY_PAGE = 1_000
SNAPSHOT_MAX_LINES = 200

_SNAPSHOT = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local out = {newest[1] and newest[1][1] or '0-0'}
local ids = redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
for _, line_id in ipairs(ids) do
  local doc = redis.call('GET', ARGV[1] .. line_id)
  if doc then out[#out + 1] = doc end
end
return out
"""


def _parse(edition: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event | None:
    """A ticker entry as an Event, or None (logged) if it is malformed: one bad entry must not
    stop delivery of everything after it."""
    try:
        return Event.from_entry(edition, entry_id, fields)
    except Exception:
        log.exception("hub: skipping malformed ticker entry %r of %s", entry_id, edition)
        return None


class Outbox:
    """A subscriber's bounded queue of frames; overflowing it marks the subscriber slow.

    A list and a future made only while waiting: thousands of these sit idle, so they
    are kept small (a deque and an asyncio.Event cost about 1.5 KiB more each).
    """

    __slots__ = ("_items", "_max", "_waiter", "overflowed")

    def __init__(self, max_items: int) -> None:
        self._items: list[Event | str] = []
        self._max = max_items
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def offer(self, item: Event | str) -> bool:
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

    def drain(self) -> list[Event | str]:
        """Return and clear whatever is queued, without waiting."""
        items, self._items = self._items, []
        return items

    async def take(self) -> list[Event | str]:
        """Wait for items and return all queued ones (empty only once overflowed)."""
        while not self._items and not self.overflowed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.drain()


@dataclass(eq=False, slots=True)
class Subscriber:
    """One reader connection as the hub sees it."""

    editions: tuple[str, ...]
    filter: Filter
    outbox: Outbox
    on_overflow: Callable[[], None] = lambda: None
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Set once the subscriber has caught up, when its transport can take frames directly.
    writer: DirectWriter | None = None

    def fresh(self, event: Event) -> bool:
        """True if `event` is newer than what this subscriber already got for its edition."""
        position = self.positions.get(event.edition)
        if position is not None and event.key <= position:
            return False
        self.positions[event.edition] = event.key
        return True


@dataclass
class Stats:
    """Counters for /metrics."""

    events_read: int = 0
    deliveries: int = 0
    slow_closed: int = 0
    replay_reads: int = 0
    snapshot_reads: int = 0
    replay_from_ring: int = 0
    redis_errors: int = 0


@dataclass(frozen=True)
class CursorCheck:
    """Whether a client's cursor can be resumed from, or needs a fresh snapshot."""

    resumable: bool
    reason: str = ""


class Hub:
    """Registry of local subscribers, the single ticker reader, replays and snapshots."""

    def __init__(self, redis: Redis, reader_redis: Redis, keys: Keys, settings: Settings) -> None:
        self._redis = redis
        self._reader_redis = reader_redis
        self._keys = keys
        self._settings = settings
        self._subscribers: dict[str, set[Subscriber]] = {e: set() for e in settings.editions}
        self._positions: dict[str, str] = {}
        # Never hold more than Redis retains, so every node answers an old cursor alike.
        ring_size = min(settings.replay_ring, settings.ticker_retention)
        self._rings: dict[str, deque[Event]] = {e: deque(maxlen=ring_size) for e in settings.editions}
        self._inflight: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self._snapshot_script = redis.register_script(_SNAPSHOT)
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self.stats = Stats()
        self.connections = 0
        self.reach: ReachRecorder | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start reading from the current end of every ticker."""
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="hub-reader"),
            asyncio.create_task(self._heartbeat_loop(), name="hub-heartbeat"),
        ]
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    async def stop(self) -> None:
        """Stop the reader and heartbeat tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def subscriber_count(self) -> int:
        """Subscribers registered right now (a subscriber of two editions counts once per edition)."""
        return sum(len(subs) for subs in self._subscribers.values())

    def outbox_total(self) -> int:
        """Frames queued across all subscribers: bounded by subscribers x outbox size."""
        seen: set[int] = set()
        total = 0
        for subs in self._subscribers.values():
            for sub in subs:
                if id(sub) not in seen:
                    seen.add(id(sub))
                    total += len(sub.outbox)
        return total

    # -- subscribers -----------------------------------------------------------

    def register(self, subscriber: Subscriber) -> dict[str, str]:
        """Add a subscriber; returns, per edition, the last cursor already dispatched.

        Every event after that cursor reaches the subscriber's outbox; events up
        to it must come from a snapshot or a replay. No await happens in here,
        so no event can slip between the two.
        """
        for edition in subscriber.editions:
            self._subscribers[edition].add(subscriber)
        return {edition: self._positions[edition] for edition in subscriber.editions}

    def has_reached(self, positions: dict[str, tuple[int, int]]) -> bool:
        """Has the reader dispatched every edition at least up to these positions?

        A reader's snapshot or resume cursor can be ahead of this node (Redis answered the
        snapshot before this node read the newest entries); until the node catches up, the
        events in between must still pass the reader's duplicate check.
        """
        return all(key <= cursor_key(self._positions[edition]) for edition, key in positions.items())

    def unregister(self, subscriber: Subscriber) -> None:
        """Remove a subscriber (idempotent)."""
        for edition in subscriber.editions:
            self._subscribers[edition].discard(subscriber)

    def _dispatch(self, event: Event) -> None:
        written = 0
        reached = 0
        offered = 0
        for subscriber in self._subscribers[event.edition]:
            selected = subscriber.filter.select(event)
            if selected is None:
                continue
            writer = subscriber.writer
            if writer is not None:
                outcome = writer.write(selected.wire)
                if outcome == OPEN:
                    written += 1
                    if selected is event:
                        reached += 1
                elif outcome == SLOW:
                    subscriber.writer = None
                    subscriber.outbox.overflowed = True
                    subscriber.on_overflow()
                continue
            if subscriber.outbox.offer(selected):
                offered += 1
            elif subscriber.outbox.overflowed:
                subscriber.on_overflow()
        self.stats.deliveries += written + offered
        if reached and self.reach is not None:
            self.reach.delivered(event, now_ms(), count=reached)

    # -- the reader ------------------------------------------------------------

    async def _warm_up(self) -> dict[str, str]:
        """Start at the end of every ticker, with the ring already holding its newest events.

        After a restart, every reader reconnects with a cursor a moment old: with the ring
        warm, their replays come from memory (one read per edition here) instead of one
        Redis read per reader.
        """
        positions = {}
        for edition in self._settings.editions:
            ring = self._rings[edition]
            newest = await self._reader_redis.xrevrange(self._keys.ticker(edition), count=ring.maxlen)
            ring.clear()
            parsed = (_parse(edition, entry_id, fields) for entry_id, fields in reversed(newest))
            ring.extend(event for event in parsed if event is not None)
            positions[edition] = newest[0][0].decode() if newest else "0-0"
        return positions

    async def _read_loop(self) -> None:
        backoff_s = 0.05
        while True:
            try:
                if not self._positions:
                    self._positions = await self._warm_up()
                    self._ready.set()
                streams = {self._keys.ticker(e): p for e, p in self._positions.items()}
                response = await self._reader_redis.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
                for stream, entries in response or []:
                    edition = stream.decode().rsplit(":", 1)[1]
                    ring = self._rings[edition]
                    for entry_id, fields in entries:
                        self._positions[edition] = entry_id.decode()
                        event = _parse(edition, entry_id, fields)
                        if event is None:
                            continue
                        ring.append(event)
                        self.stats.events_read += 1
                        self._dispatch(event)
                backoff_s = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.stats.redis_errors += 1
                log.warning("hub: Redis unavailable (%s); retrying in %.2fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
            except Exception:
                self.stats.redis_errors += 1
                log.exception("hub: reader failed; retrying")
                await asyncio.sleep(0.5)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            seen: set[int] = set()
            for subs in self._subscribers.values():
                for sub in subs:
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        if sub.writer is not None:
                            sub.writer.write(HEARTBEAT_WIRE)
                        else:
                            sub.outbox.offer(HEARTBEAT_FRAME)

    # -- snapshots and replays -------------------------------------------------

    async def snapshot(self, edition: str) -> tuple[str, list[dict[str, Any]]]:
        """An edition's live lines (pinned, then newest first) and the cursor they stand at, atomically.

        Concurrent callers share one read (the result is read-only for them).
        """
        return await self._coalesce(("snapshot", edition), lambda: self._read_snapshot(edition))

    async def _read_snapshot(self, edition: str) -> tuple[str, list[dict[str, Any]]]:
        self.stats.snapshot_reads += 1
        result = await self._snapshot_script(
            keys=[self._keys.ticker(edition), self._keys.live(edition)],
            args=[self._keys.line(""), SNAPSHOT_MAX_LINES],
        )
        cursor = result[0].decode()
        lines = [orjson.loads(doc) for doc in result[1:]]
        # Pinned lines lead; otherwise newest first (the sort is stable).
        lines.sort(key=lambda line: not line.get("pinned"))
        return cursor, lines

    async def check_cursor(self, edition: str, cursor: str) -> CursorCheck:
        """Can a client resume `edition` from `cursor`, or has the log moved past it?"""
        key = cursor_key(cursor)
        ring = self._rings[edition]
        if ring and ring[0].key <= key <= cursor_key(self._positions[edition]):
            return CursorCheck(True)  # within what this node holds in memory: no need to ask Redis
        ticker = self._keys.ticker(edition)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(ticker, count=1)
            pipe.xrevrange(ticker, count=1)
            pipe.xlen(ticker)
            oldest, newest, length = await pipe.execute()
        if not newest:
            if key == (0, 0):
                return CursorCheck(True)
            return CursorCheck(False, "the ticker log is empty (data was lost or reset)")
        if key > cursor_key(newest[0][0].decode()):
            return CursorCheck(False, "cursor is ahead of the ticker log")
        if key == (0, 0):
            if length >= self._settings.ticker_retention:
                return CursorCheck(False, "cursor is older than the retained log")
            return CursorCheck(True)
        if key < cursor_key(oldest[0][0].decode()):
            return CursorCheck(False, "cursor is older than the retained log")
        return CursorCheck(True)

    async def replay(self, edition: str, after: str, upto: str) -> list[Event]:
        """Events of `edition` with after < cursor <= upto, in order."""
        after_key, upto_key = cursor_key(after), cursor_key(upto)
        if after_key >= upto_key:
            return []
        ring = self._rings[edition]
        if ring and ring[0].key <= after_key:
            self.stats.replay_from_ring += 1
            return [e for e in ring if after_key < e.key <= upto_key]
        events: list[Event] = []
        cursor = after
        while cursor_key(cursor) < upto_key:
            page = await self._coalesced_page(edition, cursor)
            if not page:
                break
            events.extend(e for e in page if e.key <= upto_key)
            cursor = page[-1].cursor
        return events

    async def _coalesced_page(self, edition: str, after: str) -> list[Event]:
        """One XRANGE page after a cursor, shared by every concurrent caller asking the same."""
        return await self._coalesce(("page", edition, after), lambda: self._read_page(edition, after))

    async def _read_page(self, edition: str, after: str) -> list[Event]:
        self.stats.replay_reads += 1
        entries = await self._redis.xrange(
            self._keys.ticker(edition), min=f"({after}", max="+", count=REPLAY_PAGE
        )
        parsed = (_parse(edition, entry_id, fields) for entry_id, fields in entries)
        return [event for event in parsed if event is not None]

    async def _coalesce(self, key: tuple[str, ...], read: Callable[[], Awaitable[_T]]) -> _T:
        """Run `read` once for all concurrent callers with the same key.

        The read runs in a task of its own, so a caller that goes away (its reader
        disconnected) cancels only its own wait, never the others' shared read.
        """
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(read())
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return cast(_T, await asyncio.shield(task))
