"""The hub: one Redis reader per process feeding every local subscriber.

One task blocks on XREAD over all edition tickers and hands each new event to
the subscribers of that edition whose filter matches, by appending it to their
bounded outbox. Nothing here awaits a subscriber: a reader that cannot keep up
overflows its own outbox and is closed, while the others carry on.

Replays (resume from a cursor) are served from an in-memory ring of recent
events when it reaches back far enough, and otherwise from Redis with reads
coalesced per (edition, cursor), so a thousand clients resuming from the same
cursor after a restart cause one XRANGE, not a thousand.

Everything the hub remembers (ring, positions, the cached snapshot) belongs to one
generation of the tickers (flashwire/core/epoch.py). With every read (at least once a second)
the reader checks the epoch and that the entries it last read still exist; when Redis lost data it
forgets all of it and hands every subscriber a `Reset`, which its delivery turns
into reset snapshots on the same connection.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flashwire.core.clock import now_ms
from flashwire.core.epoch import HISTORY_CHANGED, current_epoch, epoch_text, history_intact
from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.service.events import HEARTBEAT_FRAME, HEARTBEAT_WIRE, Event, Filter, cursor_key
from flashwire.service.wire import OPEN, SLOW, DirectWriter

if TYPE_CHECKING:
    from flashwire.service.reach import ReachRecorder

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# The reader blocks at most this long, so its history checks (_read_once) run at least once a second.
READ_BLOCK_MS = 1_000
READ_COUNT = 1_000
REPLAY_PAGE = 1_000
# At most this many live lines of an edition are read for a snapshot (a bound on one script's
# work); subscribers' filters and the snapshot cap apply to what is read.
SNAPSHOT_SCAN_MAX = 10_000
# Snapshot messages kept at once, in characters (readers choose their filters, so any number of
# distinct messages can be asked for; beyond this, start over).
SNAPSHOT_FRAMES_MAX_CHARS = 32 * 1024 * 1024

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


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True, slots=True)
class Reset:
    """An outbox item: the ticker history changed. Send a reset snapshot of every subscribed
    edition, caught up to `positions` (edition -> the hub's position when it reset)."""

    positions: dict[str, str]
    reason: str = HISTORY_CHANGED


OutboxItem = Event | str | Reset


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


@dataclass(eq=False, slots=True)
class Subscriber:
    """One reader connection as the hub sees it."""

    editions: tuple[str, ...]
    filter: Filter
    outbox: Outbox
    on_overflow: Callable[[], None] = lambda: None
    # Called by the hub, synchronously, after it queued a Reset: the transport makes sure a sender
    # is running to send it (a caught-up WebSocket has none, the hub wrote to it directly).
    on_reset: Callable[[], None] = lambda: None
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
    history_resets: int = 0


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
        self._ring_size = min(settings.replay_ring, settings.ticker_retention)
        self._rings: dict[str, deque[Event]] = {e: deque(maxlen=self._ring_size) for e in settings.editions}
        self._inflight: dict[tuple[object, ...], asyncio.Future[Any]] = {}
        self._snapshot_script = redis.register_script(_SNAPSHOT)
        # Per edition, the newest snapshot read, while the node has dispatched nothing newer, and
        # the snapshot messages made of it (per filter, cap and reset reason): a burst of new
        # readers, or a reset of every reader, serialises each distinct message once.
        self._snapshots: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self._snapshot_frames: dict[tuple[str, Filter, int, str], str] = {}
        self._snapshot_frames_chars = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        # The tickers' generation this node's memory belongs to (None until the first read), and
        # a counter of resets, so that a read begun before a reset is never shared after it.
        self._epoch: str | None = None
        self._generation = 0
        self._reading = False
        self.stats = Stats()
        self.connections = 0
        self.reach: ReachRecorder | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self, wait_s: float = 5.0) -> None:
        """Start reading from the current end of every ticker; wait up to `wait_s` for Redis.

        Without Redis the node still starts: it keeps trying in the background, and until it
        reads the tickers it refuses readers with "try again later" (`ready` is False).
        """
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="hub-reader"),
            asyncio.create_task(self._heartbeat_loop(), name="hub-heartbeat"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=wait_s)
        if not self.ready:
            log.warning("hub: Redis is not reachable yet; refusing readers until it is")

    @property
    def ready(self) -> bool:
        """Is the node reading the tickers, so that it can serve readers without a gap?"""
        return self._epoch is not None and self._reading

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

    async def _warm_up(self) -> None:
        """Start at the end of every ticker, with the ring already holding its newest events.

        After a restart, every reader reconnects with a cursor a moment old: with the ring
        warm, their replays come from memory (one read per edition here) instead of one
        Redis read per reader. Positions and rings are replaced together, after every read.
        """
        positions: dict[str, str] = {}
        rings: dict[str, deque[Event]] = {}
        for edition in self._settings.editions:
            newest = await self._reader_redis.xrevrange(self._keys.ticker(edition), count=self._ring_size)
            parsed = (_parse(edition, entry_id, fields) for entry_id, fields in reversed(newest))
            rings[edition] = deque((event for event in parsed if event is not None), maxlen=self._ring_size)
            positions[edition] = newest[0][0].decode() if newest else "0-0"
        self._positions, self._rings = positions, rings

    async def _sync(self) -> None:
        """At start and after every Redis outage: warm up the first time, else check the history."""
        epoch = await current_epoch(self._reader_redis, self._keys)
        if self._epoch is None:
            await self._warm_up()
            self._epoch = epoch
        else:
            await self._verify(epoch)

    async def _verify(self, epoch: str | None = None) -> None:
        """Reset if the epoch changed or a ticker lost the last entry this node read of it."""
        if epoch is None:
            epoch = await current_epoch(self._reader_redis, self._keys)
        if epoch != self._epoch:
            await self._reset(f"the ticker epoch changed ({self._epoch} -> {epoch})")
            return
        lost = await history_intact(self._reader_redis, self._keys, self._positions)
        if lost is not None:
            await self._reset(f"the {lost} ticker no longer holds entry {self._positions[lost]}")

    async def _reset(self, why: str) -> None:
        """Forget this node's history and send every subscriber reset snapshots."""
        self.stats.history_resets += 1
        self._generation += 1
        self._snapshots.clear()
        self._forget_snapshot_frames()
        epoch = await current_epoch(self._reader_redis, self._keys)
        await self._warm_up()
        self._epoch = epoch
        subscribers = {id(sub): sub for subs in self._subscribers.values() for sub in subs}
        log.warning("hub: %s; sending reset snapshots to %d readers", why, len(subscribers))
        for subscriber in subscribers.values():
            subscriber.writer = None  # back to the outbox, which carries the reset
            positions = {edition: self._positions[edition] for edition in subscriber.editions}
            subscriber.outbox.restart_with(Reset(positions))
            subscriber.on_reset()

    async def _read_loop(self) -> None:
        backoff_s = 0.05
        synced = False
        while True:
            try:
                if not synced:
                    await self._sync()
                    synced = True
                    if not self._reading:
                        log.info("hub: reading the tickers")
                    self._reading = True
                    self._ready.set()
                await self._read_once()
                backoff_s = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.stats.redis_errors += 1
                if self._reading:
                    log.warning("hub: Redis unavailable (%s); refusing new readers until it is back", exc)
                self._reading = synced = False
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
            except Exception:
                self.stats.redis_errors += 1
                log.exception("hub: reader failed; retrying")
                self._reading = synced = False
                await asyncio.sleep(0.5)

    async def _read_once(self) -> None:
        """One blocking read of every ticker, then, in the same round trip, the checks that what
        it returned continues this node's history.

        Both run after the XREAD: an entry of a new generation is only ever written after its
        epoch (same script), so an unchanged epoch means the entries belong to our generation;
        and the entry each edition was read from must still exist, or the ticker went back in
        time (a failover to a replica that lacked it) before these entries were written. If
        either check fails, nothing read is dispatched and the node resets.
        """
        positions = dict(self._positions)
        streams = {self._keys.ticker(e): p for e, p in positions.items()}
        checked = [(edition, cursor) for edition, cursor in positions.items() if cursor != "0-0"]
        async with self._reader_redis.pipeline(transaction=False) as pipe:
            pipe.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
            pipe.get(self._keys.epoch)
            for edition, cursor in checked:
                pipe.xrange(self._keys.ticker(edition), min=cursor, max=cursor, count=1)
            response, epoch, *still_there = await pipe.execute()
        if epoch_text(epoch) != self._epoch or not all(still_there):
            await self._verify()
            return
        for stream, entries in response or []:
            edition = stream.decode().rsplit(":", 1)[1]
            ring = self._rings[edition]
            cached = self._snapshots.get(edition)
            for entry_id, fields in entries:
                self._positions[edition] = entry_id.decode()
                event = _parse(edition, entry_id, fields)
                if event is None:
                    continue
                if cached is not None and event.key > cursor_key(cached[0]):
                    del self._snapshots[edition]
                    self._forget_snapshot_frames(edition)
                    cached = None
                ring.append(event)
                self.stats.events_read += 1
                self._dispatch(event)

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
        """Every live line of an edition (pinned, then newest first) and the cursor they stand at,
        read atomically; callers filter and cap it themselves.

        Concurrent callers share one read, and later ones reuse it until the node dispatches a
        newer event of the edition (the result is read-only for them). A snapshot older than
        the node's position is still exact: the catch-up replays the events in between.
        """
        cached = self._snapshots.get(edition)
        if cached is not None:
            return cached
        generation = self._generation
        return await self._coalesce(
            ("snapshot", edition, generation), lambda: self._read_snapshot(edition, generation)
        )

    async def snapshot_message(
        self, edition: str, filter: Filter, max_lines: int, reset_reason: str = ""
    ) -> tuple[str, str]:
        """(cursor, the `snapshot` message as JSON text) for readers with `filter`: every live line
        that matches it, then at most `max_lines` (docs/protocol.md 4.3). Made once per distinct
        (filter, cap, reason) while the edition's snapshot is cached."""
        snapshot = await self.snapshot(edition)
        cursor, lines = snapshot
        key = (edition, filter, max_lines, reset_reason)
        frame = self._snapshot_frames.get(key) if self._snapshots.get(edition) is snapshot else None
        if frame is None:
            message: dict[str, Any] = {
                "type": "snapshot",
                "edition": edition,
                "cursor": cursor,
                "reset": bool(reset_reason),
                # The cap applies after the filter: every matching live line, up to the cap.
                "lines": [line for line in lines if filter.accepts_line(line)][:max_lines],
            }
            if reset_reason:
                message["reason"] = reset_reason
            frame = orjson.dumps(message).decode()
            if self._snapshots.get(edition) is snapshot:
                if self._snapshot_frames_chars + len(frame) > SNAPSHOT_FRAMES_MAX_CHARS:
                    self._forget_snapshot_frames()
                self._snapshot_frames[key] = frame
                self._snapshot_frames_chars += len(frame)
        return cursor, frame

    def _forget_snapshot_frames(self, edition: str | None = None) -> None:
        """Drop the kept snapshot messages (of one edition, or all)."""
        if edition is None:
            self._snapshot_frames.clear()
        else:
            self._snapshot_frames = {k: v for k, v in self._snapshot_frames.items() if k[0] != edition}
        self._snapshot_frames_chars = sum(len(frame) for frame in self._snapshot_frames.values())

    async def _read_snapshot(self, edition: str, generation: int) -> tuple[str, list[dict[str, Any]]]:
        self.stats.snapshot_reads += 1
        result = await self._snapshot_script(
            keys=[self._keys.ticker(edition), self._keys.live(edition)],
            args=[self._keys.line(""), SNAPSHOT_SCAN_MAX],
        )
        cursor = result[0].decode()
        lines = [orjson.loads(doc) for doc in result[1:]]
        # Pinned lines lead; otherwise newest first (the sort is stable).
        lines.sort(key=lambda line: not line.get("pinned"))
        snapshot = (cursor, lines)
        position = self._positions.get(edition)
        if (
            generation == self._generation
            and position is not None
            and cursor_key(cursor) >= cursor_key(position)
        ):
            self._snapshots[edition] = snapshot
        return snapshot

    async def check_cursor(self, edition: str, cursor: str) -> CursorCheck:
        """Can a client resume `edition` from `cursor`, or has the log moved past it?

        A full cursor (`<ms>-<seq>`) must name an entry of the current log: one that names
        none is from a history Redis lost (docs/protocol.md, "Ticker epochs and reset
        snapshots"). A bare `<ms>` is a time position, checked against the log's range only.
        """
        key = cursor_key(cursor)
        exact = "-" in cursor and key != (0, 0)
        ring = self._rings[edition]
        if ring and ring[0].key <= key <= cursor_key(self._positions[edition]):
            # Within what this node holds in memory: no need to ask Redis.
            if not exact or key == cursor_key(self._positions[edition]) or _holds(ring, key):
                return CursorCheck(True)
        ticker = self._keys.ticker(edition)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(ticker, count=1)
            pipe.xrevrange(ticker, count=1)
            pipe.get(self._keys.ticker_origin(edition))
            if exact:
                pipe.xrange(ticker, min=cursor, max=cursor, count=1)
            try:
                oldest, newest, origin, *named = await pipe.execute()
            except ResponseError as exc:  # an id Redis will not parse: not one of its entries
                log.info("cursor %r of %s refused by Redis (%s)", cursor, edition, exc)
                return CursorCheck(False, "cursor is not in the ticker log (its history was lost)")
        if not newest:
            if key == (0, 0):
                return CursorCheck(True)
            return CursorCheck(False, "the ticker log is empty (data was lost or reset)")
        if key > cursor_key(newest[0][0].decode()):
            return CursorCheck(False, "cursor is ahead of the ticker log")
        if key == (0, 0):
            # "From the start" only while the log still begins with its first entry ever.
            if _text(origin) != oldest[0][0].decode():
                return CursorCheck(False, "cursor is older than the retained log")
            return CursorCheck(True)
        if key < cursor_key(oldest[0][0].decode()):
            return CursorCheck(False, "cursor is older than the retained log")
        if exact and not named[0]:
            return CursorCheck(False, "cursor is not in the ticker log (its history was lost)")
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
        return await self._coalesce(
            ("page", edition, after, self._generation), lambda: self._read_page(edition, after)
        )

    async def _read_page(self, edition: str, after: str) -> list[Event]:
        self.stats.replay_reads += 1
        entries = await self._redis.xrange(
            self._keys.ticker(edition), min=f"({after}", max="+", count=REPLAY_PAGE
        )
        parsed = (_parse(edition, entry_id, fields) for entry_id, fields in entries)
        return [event for event in parsed if event is not None]

    async def _coalesce(self, key: tuple[object, ...], read: Callable[[], Awaitable[_T]]) -> _T:
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


def _holds(ring: deque[Event], key: tuple[int, int]) -> bool:
    """Does the ring (in cursor order) hold an event with exactly this cursor?"""
    index = bisect.bisect_left(ring, key, key=lambda event: event.key)
    return index < len(ring) and ring[index].key == key
