"""The hub: one Redis reader per process feeding every local subscriber.

One task blocks on XREAD over all edition tickers and hands each new event to
the subscribers of that edition whose filter matches: written straight to the
socket of a reader that has caught up (service/wire.py), or appended to its
bounded outbox (service/outbox.py). Nothing here awaits a subscriber: a reader
that cannot keep up overflows its own outbox and is closed, while the others
carry on.

Dispatch works a round at a time: the events one XREAD returned for one edition. Subscribers
are kept by filter (service/filter_index.py), so each event visits only the groups whose
filter matches it; a group's events of the round are encoded once per encoding (the writer's
`encoding`, service/wire.py) and written to each of its caught-up readers with one write. A
burst of posts then costs one write per reader per round rather than one per event (issue 14:
one write per event per reader was 68 % of a node's time at 10,000 readers).

What the node remembers of the tickers (positions, the ring of recent events, the cached
snapshot) and the snapshot and replay reads live in service/history.py. All of it belongs
to one generation of the tickers (flashwire/core/epoch.py). With every read (at least once
a second) the reader checks the epoch and that the entries it last read still exist; when
Redis lost data it forgets all of it and hands every subscriber a `Reset`, which its
delivery turns into reset snapshots on the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flashwire.core.clock import now_ms
from flashwire.core.cursors import CursorKey
from flashwire.core.epoch import current_epoch, epoch_text, history_intact
from flashwire.core.keys import Keys
from flashwire.core.protocol import HEARTBEAT_FRAME
from flashwire.core.settings import Settings
from flashwire.core.tasks import cancel_until_done
from flashwire.service.client_addresses import ClientAddresses
from flashwire.service.events import Event, Filter
from flashwire.service.filter_index import FilterIndex, Group
from flashwire.service.history import Snapshot, TickerHistory, parse_entry
from flashwire.service.outbox import Outbox, Reset
from flashwire.service.wire import OPEN, SLOW, Encoding, Writer

if TYPE_CHECKING:
    from flashwire.service.reach import ReachRecorder

log = logging.getLogger(__name__)

# Seconds the hub's tasks get to end when the node stops (lifespan shutdown).
STOP_TIMEOUT_S = 5.0

# The reader blocks at most this long, so its history checks (_read_once) run at least once a second.
READ_BLOCK_MS = 1_000
# What a replica answers while it has no primary or is loading/syncing, with the recommended
# `replica-serve-stale-data no` (docs/operations.md "Reading from replicas"): an outage, waited out.
REPLICA_NOT_READY = ("MASTERDOWN", "LOADING")


class ReplicaNotReady(ConnectionError):
    """A replica refused a read until it is in sync with its primary."""


@contextlib.contextmanager
def _replica_not_ready_is_an_outage() -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if str(exc).startswith(REPLICA_NOT_READY):
            raise ReplicaNotReady(str(exc)) from None
        raise


READ_COUNT = 1_000
# A dispatch round gives the event loop a turn at least this often (seconds), checked every
# SLICE_READERS readers: an editor's POST waits at most about this long behind a fan-out.
DISPATCH_SLICE_S = 0.005
SLICE_READERS = 256


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
    positions: dict[str, CursorKey] = field(default_factory=dict)
    # Set once the subscriber has caught up, when its transport can take frames directly.
    writer: Writer | None = None
    # False for the desk's own ticker connection (docs/protocol.md 2.4): counted apart, in neither
    # reach nor the readers online.
    counted: bool = True

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
    # Event frames written straight to transports (service/wire.py): the fast path at work.
    direct_frames: int = 0
    # Writes to transports that carried them: fewer than direct_frames when a round had several
    # events for a reader (all of them go in one write).
    direct_writes: int = 0
    slow_closed: int = 0
    replay_reads: int = 0
    snapshot_reads: int = 0
    replay_from_ring: int = 0
    redis_errors: int = 0
    history_resets: int = 0


class Hub:
    """Registry of local subscribers, dispatch to them, and the single ticker reader."""

    def __init__(
        self,
        redis: Redis,
        reader_redis: Redis,
        keys: Keys,
        settings: Settings,
        *,
        primary: Redis | None = None,
    ) -> None:
        """`redis` serves snapshots and replays, `reader_redis` the live read: both a replica's with
        FLASHWIRE_REDIS_READ_FROM_REPLICAS, and then `primary` is where a missing epoch is created."""
        self._reader_redis = reader_redis
        self._primary = primary
        self._keys = keys
        self._settings = settings
        self._subscribers: dict[str, FilterIndex[Subscriber]] = {e: FilterIndex() for e in settings.editions}
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        # The tickers' generation this node's memory belongs to (None until the first read).
        self._epoch: str | None = None
        self._reading = False
        # Set between dispatch rounds, clear while one is under way (it may give the loop turns).
        self._between_rounds = asyncio.Event()
        self._between_rounds.set()
        self.stats = Stats()
        self.history = TickerHistory(redis, reader_redis, keys, settings, self.stats)
        self.connections = 0
        # Reader connections per client address (FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT), counted
        # with `connections` by the reader endpoints.
        self.clients = ClientAddresses(settings.max_connections_per_client)
        self.reach: ReachRecorder | None = None
        # Per edition, the counted readers (WebSocket and SSE) and the desks registered right now:
        # kept by register/unregister, read by the readers-online publisher (service/reach.py)
        # and /metrics.
        self.readers: dict[str, int] = dict.fromkeys(settings.editions, 0)
        self.desks: dict[str, int] = dict.fromkeys(settings.editions, 0)

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
        """Stop the reader and heartbeat tasks, cancelling again until they have ended
        (flashwire/core/tasks.py), for at most STOP_TIMEOUT_S."""
        pending = await cancel_until_done(self._tasks, timeout_s=STOP_TIMEOUT_S)
        if pending:
            log.error("hub: tasks %s did not stop", sorted(task.get_name() for task in pending))

    # -- gauges ----------------------------------------------------------------

    def _each_subscriber(self) -> Iterator[Subscriber]:
        """Every registered subscriber once (one of several editions is in several sets)."""
        seen: set[int] = set()
        for subs in self._subscribers.values():
            for sub in subs:
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield sub

    @property
    def subscriber_count(self) -> int:
        """Subscribers registered right now (a subscriber of two editions counts once per edition)."""
        return sum(len(subs) for subs in self._subscribers.values())

    def outbox_total(self) -> int:
        """Frames queued across all subscribers: bounded by subscribers x outbox size."""
        return sum(len(sub.outbox) for sub in self._each_subscriber())

    @property
    def direct_writers(self) -> int:
        """Connections the hub writes frames to directly right now (service/wire.py): the fast
        path the benchmarks stand on. Counted when asked (a /metrics scrape), so that dispatch
        does no bookkeeping for it. A state, not proof of writes: `stats.direct_frames` counts
        the frames actually written that way."""
        return sum(1 for sub in self._each_subscriber() if sub.writer is not None)

    # -- subscribers -----------------------------------------------------------

    def register(self, subscriber: Subscriber) -> dict[str, str]:
        """Add a subscriber; returns, per edition, the last cursor already dispatched.

        Every event after that cursor reaches the subscriber's outbox; events up
        to it must come from a snapshot or a replay. No await happens in here,
        so no event can slip between the two.
        """
        counts = self.readers if subscriber.counted else self.desks
        for edition in subscriber.editions:
            if self._subscribers[edition].add(subscriber, subscriber.filter):
                counts[edition] += 1
        positions = self.history.positions
        return {edition: positions[edition] for edition in subscriber.editions}

    def has_reached(self, positions: dict[str, CursorKey]) -> bool:
        """Has the reader dispatched every edition at least up to these positions?

        A reader's snapshot or resume cursor can be ahead of this node (Redis answered the
        snapshot before this node read the newest entries); until the node catches up, the
        events in between must still pass the reader's duplicate check.
        """
        # Not during a dispatch round that gave the loop a turn: the round's events, already in the
        # positions, may still be on their way to this reader's outbox (see _dispatch).
        return self._between_rounds.is_set() and self.history.has_reached(positions)

    def unregister(self, subscriber: Subscriber) -> None:
        """Remove a subscriber (idempotent)."""
        counts = self.readers if subscriber.counted else self.desks
        for edition in subscriber.editions:
            if self._subscribers[edition].remove(subscriber, subscriber.filter):
                counts[edition] -= 1

    async def _dispatch(self, edition: str, events: Sequence[Event]) -> None:
        """Hand one round's events of `edition` (in ticker order) to every subscriber they match.

        A long round gives the event loop a turn every DISPATCH_SLICE_S, so that the newsroom API
        and new readers are served while thousands of readers are written to (issue 14: 200 posts
        took 10 s to be answered behind the fan-out). What a turn lets happen is safe: the round's
        entries are already recorded, so a reader registering now gets positions after them and
        any of them reaching it anyway fails its duplicate check (Subscriber.fresh); a reader
        leaving is at worst written to once more (CLOSED); and no reader switches to direct writes
        until the round is over (`has_reached`), which would skip that check.
        """
        selected = self._select(self._subscribers[edition], events)
        if not selected:
            return
        positions = {e: p for e, p in self.history.positions.items() if e != edition}
        loop = asyncio.get_running_loop()
        turn_at = loop.time() + DISPATCH_SLICE_S
        totals = [0, 0, 0]  # frames written, writes, frames queued in outboxes
        reached: dict[int, int] = {}
        self._between_rounds.clear()
        try:
            for group, chosen in selected.items():
                if loop.time() >= turn_at:
                    await asyncio.sleep(0)
                    turn_at = loop.time() + DISPATCH_SLICE_S
                members = group.subscribers
                if len(members) <= SLICE_READERS:
                    counted = self._deliver(members, chosen, positions, totals)
                else:
                    # A copy, taken in slices: the set may change while the loop has a turn.
                    copied, counted = list(members), 0
                    for first in range(0, len(copied), SLICE_READERS):
                        if first and loop.time() >= turn_at:
                            await asyncio.sleep(0)
                            turn_at = loop.time() + DISPATCH_SLICE_S
                        part = copied[first : first + SLICE_READERS]
                        counted += self._deliver(part, chosen, positions, totals)
                if counted:
                    for event in chosen:
                        if event.reach_key is not None:
                            reached[id(event)] = reached.get(id(event), 0) + counted
        finally:
            self._between_rounds.set()
        # One addition per round, whatever the number of readers.
        stats = self.stats
        stats.deliveries += totals[0] + totals[2]
        stats.direct_frames += totals[0]
        stats.direct_writes += totals[1]
        if reached and self.reach is not None:
            now = now_ms()
            for event in events:
                count = reached.get(id(event))
                if count:
                    self.reach.delivered(event, now, count=count)

    @staticmethod
    def _deliver(
        subscribers: Iterable[Subscriber],
        chosen: list[Event],
        positions: Mapping[str, str],
        totals: list[int],
    ) -> int:
        """Give these subscribers of one group the group's events of the round: one write to each
        caught-up reader (the events encoded once per encoding: a group may hold WebSocket and SSE
        readers), each event offered to the others' outboxes. Adds to `totals` (frames written,
        writes, frames queued); returns how many counted readers took the write (for reach)."""
        encoding: Encoding | None = None
        encoded: dict[Encoding, bytes] | None = None
        data = b""
        writes = counted = offered = 0
        for subscriber in subscribers:
            writer = subscriber.writer
            if writer is not None:
                if writer.encoding is not encoding:
                    cached = None
                    if encoding is not None:
                        encoded = encoded or {}
                        encoded[encoding] = data
                        cached = encoded.get(writer.encoding)
                    encoding = writer.encoding
                    data = encoding.encode(chosen, positions) if cached is None else cached
                outcome = writer.write(data)
                if outcome == OPEN:
                    writes += 1
                    if subscriber.counted:
                        counted += 1
                elif outcome == SLOW:
                    subscriber.writer = None
                    subscriber.outbox.overflowed = True
                    subscriber.on_overflow()
                continue
            outbox = subscriber.outbox
            for item in chosen:
                if outbox.offer(item):
                    offered += 1
                elif outbox.overflowed:
                    subscriber.on_overflow()
                    break
        totals[0] += writes * len(chosen)
        totals[1] += writes
        totals[2] += offered
        return counted

    @staticmethod
    def _select(
        index: FilterIndex[Subscriber], events: Sequence[Event]
    ) -> dict[Group[Subscriber], list[Event]]:
        """What each group of readers is sent of `events`, in order: an event visits only the groups
        whose filter takes it; one carrying a withdrawal asks every group (Filter.select)."""
        selected: dict[Group[Subscriber], list[Event]] = {}
        for event in events:
            if event.withdrawal is None:
                for group in index.matching(event):
                    chosen = selected.get(group)
                    if chosen is None:
                        selected[group] = [event]
                    else:
                        chosen.append(event)
                continue
            # A correction that moved the line: the update, its withdrawal, or nothing.
            for group in index.groups():
                item = group.filter.select(event)
                if item is not None:
                    selected.setdefault(group, []).append(item)
        return selected

    async def snapshot(self, edition: str) -> Snapshot:
        """The edition's live lines and the cursor they stand at (TickerHistory.snapshot), for the
        feeds (service/feeds.py); readers' snapshots and replays go through `history`."""
        return await self.history.snapshot(edition)

    # -- the reader ------------------------------------------------------------

    async def _sync(self) -> None:
        """At start and after every Redis outage: warm up the first time, else check the history."""
        epoch = await current_epoch(self._reader_redis, self._keys, primary=self._primary)
        if self._epoch is None:
            await self.history.warm_up()
            self._epoch = epoch
        else:
            await self._verify(epoch)

    async def _verify(self, epoch: str | None = None) -> None:
        """Reset if the epoch changed or a ticker lost the last entry this node read of it."""
        if epoch is None:
            epoch = await current_epoch(self._reader_redis, self._keys, primary=self._primary)
        if epoch != self._epoch:
            await self._reset(f"the ticker epoch changed ({self._epoch} -> {epoch})")
            return
        positions = self.history.positions
        lost = await history_intact(self._reader_redis, self._keys, positions)
        if lost is not None:
            await self._reset(f"the {lost} ticker no longer holds entry {positions[lost]}")

    async def _reset(self, why: str) -> None:
        """Forget this node's history and send every subscriber reset snapshots."""
        self.stats.history_resets += 1
        self.history.forget()
        epoch = await current_epoch(self._reader_redis, self._keys, primary=self._primary)
        await self.history.warm_up()
        self._epoch = epoch
        subscribers = list(self._each_subscriber())
        log.warning("hub: %s; sending reset snapshots to %d readers", why, len(subscribers))
        positions = self.history.positions
        for subscriber in subscribers:
            subscriber.writer = None  # back to the outbox, which carries the reset
            subscriber.outbox.restart_with(
                Reset({edition: positions[edition] for edition in subscriber.editions})
            )
            subscriber.on_reset()

    async def _read_loop(self) -> None:
        backoff_s = 0.05
        synced = False
        while True:
            try:
                if not synced:
                    with _replica_not_ready_is_an_outage():
                        await self._sync()
                    synced = True
                    if not self._reading:
                        log.info("hub: reading the tickers")
                    self._reading = True
                    self._ready.set()
                with _replica_not_ready_is_an_outage():
                    await self._read_once()
                backoff_s = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError, ReplicaNotReady) as exc:
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
        positions = dict(self.history.positions)
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
        record = self.history.record
        for stream, entries in response or []:
            edition = stream.decode().rsplit(":", 1)[1]
            events: list[Event] = []
            for entry_id, fields in entries:
                event = parse_entry(edition, entry_id, fields)
                record(edition, entry_id.decode(), event)
                if event is not None:
                    events.append(event)
            self.stats.events_read += len(events)
            await self._dispatch(edition, events)

    async def _heartbeat_loop(self) -> None:
        """Every heartbeat_s, a heartbeat to every subscriber: written to the caught-up ones, once
        encoded per encoding, queued for the others.

        Never in the middle of a dispatch round (it may give the loop turns): an SSE heartbeat's id
        names the node's positions, which already count the round's events, so a reader not yet
        written them that dropped after such a heartbeat would resume past them. No await between
        the check and the writes."""
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            while not self._between_rounds.is_set():
                await self._between_rounds.wait()
            positions = self.history.positions
            beats: dict[Encoding, bytes] = {}
            for sub in self._each_subscriber():
                writer = sub.writer
                if writer is not None:
                    beat = beats.get(writer.encoding)
                    if beat is None:
                        beat = beats[writer.encoding] = writer.encoding.heartbeat(positions)
                    writer.write(beat)
                else:
                    sub.outbox.offer(HEARTBEAT_FRAME)
