"""The hub and a reader's delivery, in-process against a real redis-server, where timing matters."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.dev.redis_server import RedisProcess
from flashwire.service import history as history_module
from flashwire.service.delivery import Delivery
from flashwire.service.events import Event, Filter
from flashwire.service.hub import Hub, Subscriber
from flashwire.service.outbox import Outbox
from flashwire.service.reach import ReachRecorder
from flashwire.service.subscription import build
from flashwire.service.wire import OPEN, WEBSOCKET


class RecordingWriter:
    """Stands in for a socket's direct writer and keeps what it was given."""

    backlog_ok = True
    encoding = WEBSOCKET

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> int:
        self.frames.append(frame)
        return OPEN


def _payload(frame: bytes) -> bytes:
    """The payload of an unmasked server frame."""
    length = frame[1] & 0x7F
    return frame[4:] if length == 126 else frame[10:] if length == 127 else frame[2:]


async def _add(redis: Redis, keys: Keys, text: str) -> str:
    line: dict[str, Any] = {
        "id": f"en-{text}",
        "version": 1,
        "edition": "en",
        "text": text,
        "urgency": "routine",
        "topics": [],
        "updated_at": "2026-11-25T12:00:00.000Z",
    }
    entry_id: bytes = await redis.xadd(keys.ticker("en"), {"t": "line", "d": orjson.dumps({"line": line})})
    return entry_id.decode()


async def test_switch_to_direct_writes_waits_until_the_node_has_caught_up_with_the_reader(
    redis_server: RedisProcess,
) -> None:
    """A reader whose snapshot is newer than what this node has read gets no event twice: the
    hand-over to direct writes waits until the node has passed the reader's position."""
    settings = Settings.from_env({"REDIS_URL": redis_server.url})
    keys = Keys("fw")
    redis, reader_redis = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    hub = Hub(redis, reader_redis, keys, settings)
    try:
        for text in ("a", "b", "c"):
            await _add(redis, keys, text)
        await hub.start()
        # The node stops reading for a moment; Redis moves on without it.
        hub._tasks[0].cancel()
        await asyncio.gather(hub._tasks[0], return_exceptions=True)
        await _add(redis, keys, "d")
        covered = await _add(redis, keys, "e")
        writer = RecordingWriter()
        subscription = build(settings, editions=["en"], topics=[], min_urgency=None, since=None)
        delivery = Delivery(hub, ReachRecorder(redis, keys, "test"), settings, subscription, writer=writer)  # type: ignore[arg-type]
        delivery.register()
        sent: list[dict[str, Any]] = []

        async def consume() -> None:
            async for frame in delivery.frames():
                sent.append(orjson.loads(frame))

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        assert [m["type"] for m in sent] == ["subscribed", "snapshot"]
        assert sent[1]["cursor"] == covered
        assert not delivery.direct, "must not hand over while the node is behind the reader"
        hub._tasks[0] = asyncio.create_task(hub._read_loop())
        await asyncio.wait_for(consumer, 5)
        assert delivery.direct
        assert writer.frames == [], "d and e were in the snapshot already"
        after = await _add(redis, keys, "f")
        for _ in range(100):
            if writer.frames:
                break
            await asyncio.sleep(0.02)
        assert [orjson.loads(_payload(frame))["cursor"] for frame in writer.frames] == [after]
        assert [m["type"] for m in sent] == ["subscribed", "snapshot"]
    finally:
        await hub.stop()
        await redis.aclose()
        await reader_redis.aclose()


async def test_a_reader_leaving_does_not_cancel_a_read_shared_with_others(redis_server: RedisProcess) -> None:
    """Concurrent callers share one read; when the first caller goes away, the others still get it."""
    settings = Settings.from_env({"REDIS_URL": redis_server.url})
    redis = Redis.from_url(redis_server.url)
    hub = Hub(redis, redis, Keys("fw"), settings)
    reads = 0

    async def slow_read() -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.2)
        return "shared result"

    try:
        first = asyncio.create_task(hub.history.coalesce(("k",), slow_read))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(hub.history.coalesce(("k",), slow_read))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await asyncio.wait_for(second, 2) == "shared result"
        assert reads == 1
    finally:
        await redis.aclose()


async def test_snapshot_messages_are_shared_and_bounded(redis_server: RedisProcess, monkeypatch: Any) -> None:
    """Readers with one filter share one serialised snapshot message; the messages kept for many different
    filters never exceed their budget (a client chooses its filter, so it must not choose our memory)."""
    monkeypatch.setattr(history_module, "SNAPSHOT_FRAMES_MAX_CHARS", 50_000)
    settings = Settings.from_env({"REDIS_URL": redis_server.url})
    keys = Keys("fw")
    redis = Redis.from_url(redis_server.url)
    hub = Hub(redis, redis, keys, settings)
    try:
        for i, topic in enumerate(settings.topics):
            line = {"id": f"en-{i}", "text": "x" * 2_000, "urgency": "routine", "topics": [topic]}
            await redis.set(keys.line(f"en-{i}"), orjson.dumps(line))
            await redis.zadd(keys.live("en"), {f"en-{i}": i})
        await hub.start()
        everything = Filter()
        first = await hub.history.snapshot_message("en", everything, 500)
        assert (await hub.history.snapshot_message("en", everything, 500))[1] is first[1]
        for topic in settings.topics:
            for rank in (0, 1, 2):
                _, frame = await hub.history.snapshot_message("en", Filter(frozenset({topic}), rank), 500)
                assert len(orjson.loads(frame)["lines"]) == (1 if rank == 2 else 0)
                kept = sum(len(f) for f in hub.history._snapshot_frames.values())
                assert kept == hub.history._snapshot_frames_chars <= 50_000
    finally:
        await hub.stop()
        await redis.aclose()


async def test_readers_leaving_leave_no_trace_in_the_hub(redis_server: RedisProcess) -> None:
    """Readers of different filters and editions registering and leaving (once or twice) leave the
    hub's subscriber index empty: no group, no topic or urgency entry, no reader counted."""
    settings = Settings.from_env({"REDIS_URL": redis_server.url})
    redis = Redis.from_url(redis_server.url)
    hub = Hub(redis, redis, Keys("fw"), settings)
    try:
        await hub.start()
        subscribers = [
            Subscriber(
                editions=settings.editions[: 1 + i % len(settings.editions)],
                filter=Filter(frozenset(settings.topics[i % 5 : i % 5 + i % 3]), i % 3),
                outbox=Outbox(8),
            )
            for i in range(60)
        ]
        for subscriber in subscribers:
            hub.register(subscriber)
            hub.register(subscriber)
        assert hub.subscriber_count == sum(len(s.editions) for s in subscribers)
        for subscriber in subscribers:
            hub.unregister(subscriber)
            hub.unregister(subscriber)
        assert hub.subscriber_count == 0
        assert hub.readers == dict.fromkeys(settings.editions, 0)
        for index in hub._subscribers.values():
            assert (len(index), index.group_count, index.entry_count) == (0, 0, 0)
    finally:
        await hub.stop()
        await redis.aclose()


class TaggedEncoding:
    """Another framing (as SSE's is): each event's cursor, one per line; counts its calls."""

    def heartbeat(self, positions: Mapping[str, str]) -> bytes:
        return b"\n"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, events: Sequence[Event], positions: Mapping[str, str]) -> bytes:
        self.calls += 1
        return b"".join(f"{event.cursor}\n".encode() for event in events)


async def test_a_round_is_encoded_once_per_encoding_and_written_once_per_reader(
    redis_server: RedisProcess,
) -> None:
    """Readers of one filter on two framings and one still catching up (its outbox): a round of three
    events costs one encode per framing and one write per caught-up reader, in ticker order, and the
    outbox gets each event."""
    settings = Settings.from_env({"REDIS_URL": redis_server.url})
    redis = Redis.from_url(redis_server.url)
    hub = Hub(redis, redis, Keys("fw"), settings)
    try:
        await hub.start()
        tagged = TaggedEncoding()
        writers = [RecordingWriter(), RecordingWriter(), RecordingWriter(), RecordingWriter()]
        writers[1].encoding = writers[3].encoding = tagged  # type: ignore[assignment]
        subscribers = [Subscriber(editions=("en",), filter=Filter(), outbox=Outbox(8)) for _ in range(5)]
        for subscriber, writer in zip(subscribers, writers, strict=False):
            subscriber.writer = writer
            hub.register(subscriber)
        hub.register(subscribers[4])
        events = [
            Event.from_entry("en", f"{i}-0", {b"t": b"line", b"d": orjson.dumps({"line": {"id": f"en-{i}"}})})
            for i in (1, 2, 3)
        ]
        await hub._dispatch("en", events)
        assert tagged.calls == 1
        for writer in writers[::2]:
            assert writer.frames == [b"".join(event.wire for event in events)]
        for writer in writers[1::2]:
            assert writer.frames == [b"1-0\n2-0\n3-0\n"]
        assert subscribers[4].outbox.drain() == events
        assert (hub.stats.direct_frames, hub.stats.direct_writes, hub.stats.deliveries) == (12, 4, 15)
    finally:
        await hub.stop()
        await redis.aclose()
