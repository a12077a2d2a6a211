"""What one reader is sent, whatever the transport (WebSocket or SSE).

First the `subscribed` confirmation; then, per edition, either a snapshot or a
replay from the reader's cursor up to where the hub stood when the reader
registered; then live events from the reader's outbox, skipping any the
catch-up already covered. Each frame is the event's shared, pre-serialised
text; reach is counted once the transport has taken the frame (a desk's frames are not:
docs/protocol.md 2.4).

When the hub finds that Redis lost the history it had (flashwire/core/epoch.py), it puts
a `Reset` in the outbox: the reader then gets a reset snapshot of every edition,
and live events go on from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from flashwire.core.clock import now_ms
from flashwire.core.cursors import cursor_key, cursor_set
from flashwire.core.settings import Settings
from flashwire.service.events import Event
from flashwire.service.hub import Hub, Subscriber
from flashwire.service.outbox import Outbox, Reset
from flashwire.service.reach import ReachRecorder
from flashwire.service.subscription import Subscription
from flashwire.service.wire import Writer


def dumps(message: dict[str, Any]) -> str:
    """One protocol message as JSON text."""
    return orjson.dumps(message).decode()


class Delivery:
    """One reader's stream of frames."""

    def __init__(
        self,
        hub: Hub,
        reach: ReachRecorder,
        settings: Settings,
        subscription: Subscription,
        *,
        on_overflow: Callable[[], None] = lambda: None,
        on_reset: Callable[[], None] = lambda: None,
        writer: Writer | None = None,
    ) -> None:
        self._hub = hub
        self._reach = reach
        self._snapshot_max_lines = settings.snapshot_max_lines
        self.subscription = subscription
        self.subscriber = Subscriber(
            editions=subscription.editions,
            filter=subscription.filter,
            outbox=Outbox(settings.outbox_max_frames),
            on_overflow=on_overflow,
            on_reset=on_reset,
            counted=subscription.counted,
        )
        # The cursor of each edition the reader is at: resuming from these misses nothing. An
        # edition the reader gave a cursor for is at that cursor until its catch-up moves it.
        self.cursors: dict[str, str] = dict(subscription.since)
        self._dispatched: dict[str, str] = {}
        self._writer = writer

    def register(self) -> None:
        """Start receiving live events (into the outbox) from now on."""
        self._dispatched = self._hub.register(self.subscriber)

    def unregister(self) -> None:
        """Stop receiving live events (idempotent)."""
        self._hub.unregister(self.subscriber)

    @property
    def overflowed(self) -> bool:
        """Did the reader fall so far behind that its outbox overflowed?"""
        return self.subscriber.outbox.overflowed

    def resume_token(self) -> str:
        """The cursors as one string, `en:<cursor>,ar:<cursor>` (the SSE event id): every edition
        given a cursor, and every other one once its snapshot is out."""
        return cursor_set(self.cursors)

    @property
    def direct(self) -> bool:
        """Has delivery handed over to direct writes (frames() has then ended)?"""
        return self.subscriber.writer is not None

    async def frames(self) -> AsyncIterator[str]:
        """Every frame for this reader until its outbox overflows, or, with a direct writer, until
        it has caught up and the hub takes over."""
        yield dumps(self.subscription.describe())
        for edition in self.subscription.editions:
            since = self.subscription.since.get(edition)
            async for frame in self._catch_up(edition, self._dispatched[edition], since):
                yield frame
        async for frame in self.live():
            yield frame

    async def live(self) -> AsyncIterator[str]:
        """Frames from the outbox, until it overflows or the hub takes over (see frames()).

        A transport whose reader was handed over to direct writes runs this again when the hub
        queues a `Reset` (Subscriber.on_reset)."""
        subscriber, outbox, reach = self.subscriber, self.subscriber.outbox, self._reach
        while True:
            if self._writer is not None and not len(outbox) and self._hub.has_reached(subscriber.positions):
                if self._writer.backlog_ok:
                    # Caught up, nothing queued, and this node is not behind the reader: from here
                    # on the hub writes frames straight to the socket. No await between the
                    # checks and the switch, so nothing slips.
                    subscriber.writer = self._writer
                    return
                # A large snapshot is still on its way out; let it drain before the hub's
                # send-buffer limit applies (events meanwhile queue in the outbox as before).
                await asyncio.sleep(0.05)
                continue
            items = await outbox.take()
            if outbox.overflowed:
                return
            for item in items:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, Reset):
                    for edition in self.subscription.editions:
                        dispatched = item.positions[edition]
                        async for frame in self._catch_up(edition, dispatched, None, item.reason):
                            yield frame
                elif subscriber.fresh(item):
                    self.cursors[item.edition] = item.cursor
                    yield item.frame
                    if item.reach_key is not None and subscriber.counted:
                        reach.delivered(item, now_ms())

    async def _catch_up(
        self, edition: str, dispatched: str, since: str | None, reset_reason: str = ""
    ) -> AsyncIterator[str]:
        """Bring one edition up to `dispatched` (the hub's position when the reader registered, or
        when it reset), by a replay from `since` or a snapshot (a reset one if `reset_reason`)."""
        history, subscriber = self._hub.history, self.subscriber
        if since is not None:
            check = await history.check_cursor(edition, since)
            if not check.resumable:
                since, reset_reason = None, check.reason
        if since is None:
            since, snapshot = await history.snapshot_message(
                edition, subscriber.filter, self._snapshot_max_lines, reset_reason
            )
            self.cursors[edition] = since
            yield snapshot
        self.cursors[edition] = since
        subscriber.positions[edition] = cursor_key(since)
        replayed: list[Event] = await history.replay(edition, since, dispatched)
        for event in replayed:
            selected = subscriber.filter.select(event)
            if selected is not None and subscriber.fresh(selected):
                self.cursors[edition] = selected.cursor
                yield selected.frame
                if subscriber.counted:
                    self._reach.delivered(selected, now_ms(), live=False)
        # Live events up to here are already covered by the snapshot or the replay.
        if cursor_key(dispatched) > subscriber.positions[edition]:
            subscriber.positions[edition] = cursor_key(dispatched)
            self.cursors[edition] = dispatched
