"""What a node remembers of the tickers, and the reads that catch a reader up.

Per edition: the position the node has read up to, a ring of the newest events, and
the newest snapshot (with the snapshot messages made of it). Replays (resume from a
cursor) are served from the ring when it reaches back far enough, and otherwise from
Redis with reads coalesced per (edition, cursor), so a thousand clients resuming from
the same cursor after a restart cause one XRANGE, not a thousand (DESIGN.md, "Pitfalls").

All of it belongs to one generation of the tickers (flashwire/core/epoch.py): when the
hub finds that Redis lost data it calls `forget()` and `warm_up()`, and a read begun
before that is never shared or kept after it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.cursors import START, CursorKey, cursor_key
from flashwire.core.keys import Keys
from flashwire.core.protocol import SNAPSHOT
from flashwire.core.settings import Settings
from flashwire.service.events import Event, Filter

if TYPE_CHECKING:
    from flashwire.service.hub import Stats

log = logging.getLogger(__name__)
_T = TypeVar("_T")

REPLAY_PAGE = 1_000
# At most this many live lines of an edition are read for a snapshot (a bound on one script's
# work); subscribers' filters and the snapshot cap apply to what is read.
SNAPSHOT_SCAN_MAX = 10_000
# Snapshot messages kept at once, in characters (readers choose their filters, so any number of
# distinct messages can be asked for; beyond this, start over).
SNAPSHOT_FRAMES_MAX_CHARS = 32 * 1024 * 1024

# The newest entry id of the ticker and the live lines, newest first, in one atomic step.
# Every key is declared (a Redis Cluster routes and checks a script by its KEYS; PITFALLS 3.9), so
# the live ids are read first and passed in with their line keys: KEYS = ticker, live set, then the
# line of each id in ARGV[2..]. If the live set changed in between, the script answers {} and the
# read is made again (it changes only when a desk entry is applied).
_SNAPSHOT_SCRIPT = """
local ids = redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
if #ids ~= #ARGV - 1 then return {} end
for i, line_id in ipairs(ids) do
  if ARGV[i + 1] ~= line_id then return {} end
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local out = {newest[1] and newest[1][1] or '0-0'}
for i = 3, #KEYS do
  local doc = redis.call('GET', KEYS[i])
  if doc then out[#out + 1] = doc end
end
return out
"""
# A snapshot read whose live set changes under it this many times running fails (never seen:
# the set changes once per applied desk entry).
SNAPSHOT_ATTEMPTS = 20

# (cursor, live lines: pinned first, then newest first).
Snapshot = tuple[str, list[dict[str, Any]]]


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def parse_entry(edition: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event | None:
    """A ticker entry as an Event, or None (logged) if it is malformed: one bad entry must not
    stop delivery of everything after it."""
    try:
        return Event.from_entry(edition, entry_id, fields)
    except Exception:
        log.exception("hub: skipping malformed ticker entry %r of %s", entry_id, edition)
        return None


@dataclass(frozen=True)
class CursorCheck:
    """Whether a client's cursor can be resumed from, or needs a fresh snapshot."""

    resumable: bool
    reason: str = ""


class TickerHistory:
    """One node's memory of every edition's ticker, and the snapshot and replay reads made from it.

    `positions` (edition -> the newest entry id read, "0-0" for none) is what the hub has
    dispatched; `record` moves it as the hub reads.
    """

    def __init__(
        self, redis: Redis, reader_redis: Redis, keys: Keys, settings: Settings, stats: Stats
    ) -> None:
        self._redis = redis
        self._reader_redis = reader_redis
        self._keys = keys
        self._editions = settings.editions
        self._stats = stats
        self.positions: dict[str, str] = {}
        # Never hold more than Redis retains, so every node answers an old cursor alike.
        self._ring_size = min(settings.replay_ring, settings.ticker_retention)
        self._rings: dict[str, deque[Event]] = {e: deque(maxlen=self._ring_size) for e in settings.editions}
        self._inflight: dict[tuple[object, ...], asyncio.Future[Any]] = {}
        self._snapshot_script = redis.register_script(_SNAPSHOT_SCRIPT)
        # Per edition, the newest snapshot read, while the node has dispatched nothing newer, and
        # the snapshot messages made of it (per filter, cap and reset reason): a burst of new
        # readers, or a reset of every reader, serialises each distinct message once.
        self._snapshots: dict[str, Snapshot] = {}
        self._snapshot_frames: dict[tuple[str, Filter, int, str], str] = {}
        self._snapshot_frames_chars = 0
        # A counter of resets, so that a read begun before a reset is never shared after it.
        self.generation = 0

    # -- keeping up with the tickers -------------------------------------------

    async def warm_up(self) -> None:
        """Start at the end of every ticker, with the ring already holding its newest events.

        After a restart, every reader reconnects with a cursor a moment old: with the ring
        warm, their replays come from memory (one read per edition here) instead of one
        Redis read per reader. Positions and rings are replaced together, after every read.
        """
        positions: dict[str, str] = {}
        rings: dict[str, deque[Event]] = {}
        for edition in self._editions:
            newest = await self._reader_redis.xrevrange(self._keys.ticker(edition), count=self._ring_size)
            parsed = (parse_entry(edition, entry_id, fields) for entry_id, fields in reversed(newest))
            rings[edition] = deque((event for event in parsed if event is not None), maxlen=self._ring_size)
            positions[edition] = newest[0][0].decode() if newest else START
        self.positions, self._rings = positions, rings

    def forget(self) -> None:
        """The tickers' history changed: drop the snapshots and start a new generation (call
        `warm_up` next for positions and rings)."""
        self.generation += 1
        self._snapshots.clear()
        self._forget_snapshot_frames()

    def record(self, edition: str, entry_id: str, event: Event | None) -> None:
        """The hub read `entry_id` of `edition` (`event` is None if the entry was malformed)."""
        self.positions[edition] = entry_id
        if event is None:
            return
        cached = self._snapshots.get(edition)
        if cached is not None and event.key > cursor_key(cached[0]):
            del self._snapshots[edition]
            self._forget_snapshot_frames(edition)
        self._rings[edition].append(event)

    def has_reached(self, positions: dict[str, CursorKey]) -> bool:
        """Has the node read every edition at least up to these positions?"""
        return all(key <= cursor_key(self.positions[edition]) for edition, key in positions.items())

    # -- snapshots -------------------------------------------------------------

    async def snapshot(self, edition: str) -> Snapshot:
        """Every live line of an edition (pinned, then newest first) and the cursor they stand at,
        read atomically; callers filter and cap it themselves.

        Concurrent callers share one read, and later ones reuse it until the node dispatches a
        newer event of the edition (the result is read-only for them). A snapshot older than
        the node's position is still exact: the catch-up replays the events in between.
        """
        cached = self._snapshots.get(edition)
        if cached is not None:
            return cached
        generation = self.generation
        return await self.coalesce(
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
                "type": SNAPSHOT,
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

    async def _read_snapshot(self, edition: str, generation: int) -> Snapshot:
        self._stats.snapshot_reads += 1
        result = await self._read_snapshot_entries(edition)
        cursor = result[0].decode()
        lines = [orjson.loads(doc) for doc in result[1:]]
        # Pinned lines lead; otherwise newest first (the sort is stable).
        lines.sort(key=lambda line: not line.get("pinned"))
        snapshot = (cursor, lines)
        position = self.positions.get(edition)
        if (
            generation == self.generation
            and position is not None
            and cursor_key(cursor) >= cursor_key(position)
        ):
            self._snapshots[edition] = snapshot
        return snapshot

    async def _read_snapshot_entries(self, edition: str) -> list[bytes]:
        """[newest ticker id, line documents of the live lines, newest first] in one atomic step."""
        live = self._keys.live(edition)
        for _ in range(SNAPSHOT_ATTEMPTS):
            ids = [_text(raw) or "" for raw in await self._redis.zrevrange(live, 0, SNAPSHOT_SCAN_MAX - 1)]
            result: list[bytes] = await self._snapshot_script(
                keys=[self._keys.ticker(edition), live, *(self._keys.line(i) for i in ids)],
                args=[SNAPSHOT_SCAN_MAX, *ids],
            )
            if result:
                return result
        raise RuntimeError(
            f"the live lines of {edition} kept changing during {SNAPSHOT_ATTEMPTS} snapshot reads"
        )

    # -- resuming --------------------------------------------------------------

    async def check_cursor(self, edition: str, cursor: str) -> CursorCheck:
        """Can a client resume `edition` from `cursor`, or has the log moved past it?

        A full cursor (`<ms>-<seq>`) must name an entry of the current log: one that names
        none is from a history Redis lost (docs/protocol.md, "Ticker epochs and reset
        snapshots"). A bare `<ms>` is a time position, checked against the log's range only.
        """
        key = cursor_key(cursor)
        exact = "-" in cursor and key != (0, 0)
        ring = self._rings[edition]
        if ring and ring[0].key <= key <= cursor_key(self.positions[edition]):
            # Within what this node holds in memory: no need to ask Redis.
            if not exact or key == cursor_key(self.positions[edition]) or _holds(ring, key):
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
            self._stats.replay_from_ring += 1
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
        return await self.coalesce(
            ("page", edition, after, self.generation), lambda: self._read_page(edition, after)
        )

    async def _read_page(self, edition: str, after: str) -> list[Event]:
        self._stats.replay_reads += 1
        entries = await self._redis.xrange(
            self._keys.ticker(edition), min=f"({after}", max="+", count=REPLAY_PAGE
        )
        parsed = (parse_entry(edition, entry_id, fields) for entry_id, fields in entries)
        return [event for event in parsed if event is not None]

    async def coalesce(self, key: tuple[object, ...], read: Callable[[], Awaitable[_T]]) -> _T:
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


def _holds(ring: deque[Event], key: CursorKey) -> bool:
    """Does the ring (in cursor order) hold an event with exactly this cursor?"""
    index = bisect.bisect_left(ring, key, key=lambda event: event.key)
    return index < len(ring) and ring[index].key == key
