"""The live path end to end: API -> desk -> worker -> ticker -> WebSocket readers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Reader, Stack, auth, metric, open_reader, post_line


@pytest.mark.parametrize("stack", ["single", "cluster"], indirect=True)
async def test_posted_line_reaches_subscriber_then_update_and_retract_for_same_id(
    stack: Stack, readers: list[Reader]
) -> None:
    """A line, its correction and its retraction reach a reader as line / update / retract."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    assert (await reader.next_of("subscribed"))["editions"] == ["en"]
    snapshot = await reader.next_of("snapshot")
    assert snapshot["lines"] == [] and snapshot["reset"] is False
    async with httpx.AsyncClient(base_url=node.url) as client:
        posted = await post_line(client, chief, "Parliament dissolved", urgency="flash", topics=["politics"])
        [line] = await reader.events(1)
        assert line["type"] == "line"
        assert line["line"]["id"] == posted["id"]
        assert line["line"]["text"] == "Parliament dissolved"
        assert line["line"]["version"] == 1 and line["line"]["iptc_urgency"] == 1

        response = await client.post(
            f"/api/v1/lines/{posted['id']}/corrections",
            json={"text": "Parliament dissolved by decree"},
            headers=auth(chief),
        )
        assert response.status_code == 201, response.text
        [update] = await reader.events(1)
        assert update["type"] == "update"
        assert update["line"]["id"] == posted["id"]
        assert update["line"]["version"] == 2
        assert update["line"]["text"] == "Parliament dissolved by decree"

        response = await client.post(f"/api/v1/lines/{posted['id']}/retraction", headers=auth(chief))
        assert response.status_code == 201, response.text
        [retract] = await reader.events(1)
        assert retract["type"] == "retract"
        assert retract["id"] == posted["id"] and retract["reason"] == "killed"
        assert retract["line"]["status"] == "canceled"
        assert [e["cursor"] for e in (line, update, retract)] == sorted(
            [line["cursor"], update["cursor"], retract["cursor"]], key=lambda c: tuple(map(int, c.split("-")))
        )


async def test_topic_and_urgency_filters_deliver_only_matching_lines(
    stack: Stack, readers: list[Reader]
) -> None:
    """Readers filtered by topic or minimum urgency get exactly the matching lines."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    by_topic = await open_reader(node.ws_url, "editions=en&topics=mena,sports")
    by_urgency = await open_reader(node.ws_url, "editions=en&min_urgency=urgent")
    everything = await open_reader(node.ws_url, "editions=en")
    readers.extend([by_topic, by_urgency, everything])
    for reader in (by_topic, by_urgency, everything):
        await reader.next_of("snapshot")
    posts: list[tuple[str, dict[str, Any]]] = [
        ("a", {"topics": ["mena"], "urgency": "routine"}),
        ("b", {"topics": ["economy"], "urgency": "flash"}),
        ("c", {"topics": ["sports", "europe"], "urgency": "urgent"}),
        ("d", {"topics": [], "urgency": "routine"}),
    ]
    async with httpx.AsyncClient(base_url=node.url) as client:
        for text, fields in posts:
            await post_line(client, editor, text, **fields)
    assert [e["line"]["text"] for e in await everything.events(4)] == ["a", "b", "c", "d"]
    assert [e["line"]["text"] for e in await by_topic.events(2)] == ["a", "c"]
    assert [e["line"]["text"] for e in await by_urgency.events(2)] == ["b", "c"]
    # Nothing else is on its way to the filtered readers.
    for reader in (by_topic, by_urgency):
        try:
            extra = await reader.next_of("line", "update", "retract", timeout_s=0.5)
        except TimeoutError:
            continue
        raise AssertionError(f"unexpected event {extra}")


async def test_snapshot_holds_live_lines_newest_first_and_subscribe_message_works(
    stack: Stack, readers: list[Reader]
) -> None:
    """A reader that subscribes by message gets a snapshot of live lines, filtered, newest first."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        first = await post_line(client, chief, "first", topics=["health"])
        await post_line(client, chief, "second", topics=["sports"])
        third = await post_line(client, chief, "third", topics=["health"])
        killed = await post_line(client, chief, "killed", topics=["health"])
        await client.post(f"/api/v1/lines/{killed['id']}/retraction", headers=auth(chief))
        await post_line(client, chief, "عاجل", edition="ar", topics=["health"])
        await stack.until_applied()
    reader = await open_reader(node.ws_url)
    readers.append(reader)
    await reader.ws.send('{"type":"subscribe","editions":["en","ar"],"topics":["health"]}')
    subscribed = await reader.next_of("subscribed")
    assert subscribed["editions"] == ["en", "ar"] and subscribed["topics"] == ["health"]
    en = await reader.next_of("snapshot")
    ar = await reader.next_of("snapshot")
    assert en["edition"] == "en" and [line["id"] for line in en["lines"]] == [third["id"], first["id"]]
    assert ar["edition"] == "ar" and [line["text"] for line in ar["lines"]] == ["عاجل"]
    assert ar["lines"][0]["direction"] == "rtl"


@pytest.mark.parametrize(
    ("stack", "direct_writes"), [("single", "1"), ("single", "0"), ("cluster", "1")], indirect=["stack"]
)
async def test_resume_after_missing_50_lines_gets_exactly_those_then_live_ones(
    stack: Stack, readers: list[Reader], direct_writes: str
) -> None:
    """Reconnecting with the last cursor replays exactly the 50 missed lines, in order, then live ones,
    including lines posted while the replay runs: no gap, no duplicate (with the hub writing frames
    straight to sockets, and through the ASGI path)."""
    stack.worker()
    node = stack.service(FLASHWIRE_DIRECT_WRITES=direct_writes)
    editor = await stack.token("editor", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    snapshot = await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "seen-0")
        [seen] = await reader.events(1)
        await reader.ws.close()
        for i in range(50):
            await post_line(client, editor, f"missed-{i}")
        await stack.until_applied()

        async def keep_posting() -> None:
            for i in range(20):
                await post_line(client, editor, f"during-{i}")

        poster = asyncio.create_task(keep_posting())
        resumed = await open_reader(node.ws_url, f"editions=en&since={seen['cursor']}")
        readers.append(resumed)
        await poster
        events = await resumed.events(70, timeout_s=20)
    texts = [e["line"]["text"] for e in events]
    assert texts == [f"missed-{i}" for i in range(50)] + [f"during-{i}" for i in range(20)]
    cursors = [tuple(map(int, e["cursor"].split("-"))) for e in events]
    assert cursors == sorted(set(cursors)), "cursors must strictly increase"
    assert not any(m["type"] == "snapshot" for m in resumed.messages), "a resume must not resend a snapshot"
    assert snapshot["cursor"] == "0-0"


async def test_two_service_processes_each_deliver_every_line(stack: Stack, readers: list[Reader]) -> None:
    """Two service nodes on one Redis both deliver every line to their subscribers."""
    stack.worker()
    first, second = stack.service(), stack.service()
    editor = await stack.token("editor", ["en"])
    on_first = [await open_reader(first.ws_url, "editions=en") for _ in range(3)]
    on_second = [await open_reader(second.ws_url, "editions=en") for _ in range(3)]
    readers.extend(on_first + on_second)
    for reader in on_first + on_second:
        await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=first.url) as client:
        posted = [await post_line(client, editor, f"line {i}") for i in range(30)]
    expected = [p["id"] for p in posted]
    for reader in on_first + on_second:
        assert [e["line"]["id"] for e in await reader.events(30)] == expected


@pytest.mark.parametrize("stack", ["single", "cluster"], indirect=True)
async def test_service_restart_readers_resume_with_cursors_and_lose_nothing(stack: Stack) -> None:
    """Lines posted while the only service node restarts reach the reconnecting clients, once, in order."""
    from flashwire.client import TickerClient

    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    clients = [
        TickerClient(node.ws_url, editions=["en"], backoff_base_s=0.05, backoff_max_s=0.5) for _ in range(5)
    ]
    received: list[list[str]] = [[] for _ in clients]
    total = 40

    async def consume(client: TickerClient, into: list[str]) -> None:
        async with contextlib.aclosing(client.events()) as events:
            async for event in events:
                if event["type"] == "line":
                    into.append(event["line"]["text"])
                    if len(into) == total:
                        return

    tasks = [asyncio.create_task(consume(c, r)) for c, r in zip(clients, received, strict=True)]
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=node.url) as client:
        for i in range(20):
            await post_line(client, editor, f"before-{i}")
        await stack.until_applied()
        node.terminate()
        # While the node is down, the newsroom keeps posting through a second node.
        other = stack.service()
        async with httpx.AsyncClient(base_url=other.url) as other_client:
            for i in range(10):
                await post_line(other_client, editor, f"during-{i}")
        node.start()
        node.wait_ready()
        for i in range(10):
            await post_line(client, editor, f"after-{i}")
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    expected = (
        [f"before-{i}" for i in range(20)]
        + [f"during-{i}" for i in range(10)]
        + [f"after-{i}" for i in range(10)]
    )
    for client_received, ticker in zip(received, clients, strict=True):
        assert client_received == expected
        assert ticker.reconnects >= 1


async def test_correction_moving_a_line_out_of_a_filter_withdraws_it(
    stack: Stack, readers: list[Reader]
) -> None:
    """A reader filtering on a topic is told to drop a line corrected out of that topic (retract,
    reason 'filtered') and gets it back as an update when a later correction puts it back."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    mena = await open_reader(node.ws_url, "editions=en&topics=mena")
    europe = await open_reader(node.ws_url, "editions=en&topics=europe")
    readers.extend([mena, europe])
    await mena.next_of("snapshot")
    await europe.next_of("snapshot")
    async with httpx.AsyncClient(base_url=node.url) as client:
        posted = await post_line(client, editor, "Border crossing reopens", topics=["mena"])
        [line] = await mena.events(1)
        assert line["type"] == "line"
        for topics in (["europe"], ["mena"]):
            response = await client.post(
                f"/api/v1/lines/{posted['id']}/corrections", json={"topics": topics}, headers=auth(editor)
            )
            assert response.status_code == 201
    withdrawn, back = await mena.events(2)
    assert withdrawn["type"] == "retract" and withdrawn["reason"] == "filtered"
    assert withdrawn["id"] == posted["id"]
    assert back["type"] == "update" and back["line"]["topics"] == ["mena"] and back["line"]["version"] == 3
    arrived, left = await europe.events(2)
    assert arrived["type"] == "update" and arrived["line"]["version"] == 2
    assert left["type"] == "retract" and left["reason"] == "filtered"


async def test_readers_resuming_after_a_restart_are_served_from_memory(
    stack: Stack, readers: list[Reader]
) -> None:
    """After a node restarts, readers resuming with recent cursors get their replays from the warm ring:
    no Redis read per reader."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        for i in range(5):
            await post_line(client, editor, f"seen {i}")
    redis = stack.redis()
    try:
        for _ in range(200):  # the worker applies asynchronously: wait for all five
            if await redis.xlen(stack.keys.ticker("en")) == 5:
                break
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    first = [await open_reader(node.ws_url, "editions=en") for _ in range(20)]
    cursor = (await first[0].next_of("snapshot"))["cursor"]
    for reader in first:
        await reader.ws.close()
    node.terminate()
    async with httpx.AsyncClient(base_url=stack.service().url) as client:
        for i in range(3):
            await post_line(client, editor, f"missed {i}")
    node.start()
    node.wait_ready()
    resumed = [await open_reader(node.ws_url, f"editions=en&since={cursor}") for _ in range(20)]
    readers.extend(resumed)
    for reader in resumed:
        assert [e["line"]["text"] for e in await reader.events(3)] == ["missed 0", "missed 1", "missed 2"]
    async with httpx.AsyncClient(base_url=node.url) as client:
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, "flashwire_replay_reads_total") == 0
    assert metric(metrics, "flashwire_replay_from_ring_total") == 20


async def test_cursor_older_than_the_retained_log_gets_a_reset_snapshot(
    stack: Stack, readers: list[Reader]
) -> None:
    """A reader resuming from a cursor the ticker has trimmed away gets a fresh snapshot marked as a reset;
    a cursor from the future (another deployment's) too."""
    stack.worker(FLASHWIRE_TICKER_RETENTION="10")
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=node.url) as client:
        await post_line(client, editor, "the first line")
        [first] = await reader.events(1)
        await reader.ws.close()
        for i in range(250):
            await post_line(client, editor, f"line {i}")
    redis = stack.redis()
    try:
        oldest = (await redis.xrange(stack.keys.ticker("en"), count=1))[0][0].decode()
    finally:
        await redis.aclose()
    assert tuple(map(int, oldest.split("-"))) > tuple(map(int, first["cursor"].split("-"))), "log was trimmed"
    # The first node still holds every line in its replay ring and would simply replay them; a node
    # started now knows only what Redis retained.
    fresh = stack.service()
    for cursor, reason in ((first["cursor"], "older than the retained log"), ("99999999999999-0", "ahead")):
        resumed = await open_reader(fresh.ws_url, f"editions=en&since={cursor}")
        readers.append(resumed)
        snapshot = await resumed.next_of("snapshot")
        assert snapshot["reset"] is True and reason in snapshot["reason"]
        # Every live line, not just the newest 200 (the cap, 500 by default, is not reached).
        assert len(snapshot["lines"]) == 251 and snapshot["lines"][0]["text"] == "line 249"


def cursor_key(cursor: str) -> tuple[int, int]:
    """A stream entry id "<ms>-<seq>" as numbers, the order Redis gives them."""
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


class BurstReader:
    """A reader that keeps every message it receives (hello, subscribed, snapshot, events), in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.messages.append(orjson.loads(raw))

    def snapshot(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["type"] == "snapshot"), None)

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] in ("line", "update", "retract")]

    def seen_ids(self) -> list[str]:
        """Line ids in the snapshot, then in the events, as received (duplicates kept)."""
        snapshot = self.snapshot()
        in_snapshot = [line["id"] for line in snapshot["lines"]] if snapshot else []
        return in_snapshot + [event["line"]["id"] for event in self.events()]


async def test_new_readers_during_a_burst_get_every_line_once_after_their_snapshot(
    stack: Stack, readers: list[Reader]
) -> None:
    """Readers joining a node while 150 lines pour in through another node get every line exactly once:
    in their snapshot, or after it as an event with a later cursor (strictly increasing). No duplicate
    even when Redis answered the snapshot before this node had read the newest entries; no gap."""
    stack.worker()
    node, poster = stack.service(), stack.service()
    editor = await stack.token("editor", ["en"])
    joined: list[BurstReader] = []
    joining: list[asyncio.Task[None]] = []

    async def join() -> None:
        ws = await connect(node.ws_url + "?editions=en", compression=None)
        readers.append(Reader(ws))  # closed at teardown
        joined.append(BurstReader(ws))

    posted: list[str] = []
    async with httpx.AsyncClient(base_url=poster.url) as client:
        for i in range(150):
            posted.append((await post_line(client, editor, f"burst {i}"))["id"])
            if i % 5 == 0:  # a new reader every fifth line, racing the next posts
                joining.append(asyncio.create_task(join()))
    await asyncio.gather(*joining)
    assert len(joined) == 30

    # Every reader ends up holding all 150 lines (fan-out is asynchronous: wait for it, boundedly).
    deadline = asyncio.get_running_loop().time() + 10
    while any(set(r.seen_ids()) != set(posted) for r in joined):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)

    for index, reader in enumerate(joined):
        snapshot = reader.snapshot()
        assert snapshot is not None, f"reader {index} got no snapshot: {reader.messages}"
        after = cursor_key(snapshot["cursor"])
        cursors = [cursor_key(event["cursor"]) for event in reader.events()]
        assert all(key > after for key in cursors), f"reader {index}: an event its snapshot covers"
        assert cursors == sorted(set(cursors)), f"reader {index}: cursors not strictly increasing"
        seen = reader.seen_ids()
        assert len(seen) == len(set(seen)), f"reader {index}: a line twice"
        missing = [line_id for line_id in posted if line_id not in seen]
        assert not missing, (
            f"reader {index} (snapshot at {snapshot['cursor']} with {len(snapshot['lines'])} lines, "
            f"{len(cursors)} events) never got {len(missing)} lines: {missing[:3]}…"
        )
    # Some readers joined early enough to get part of the burst as live events, not all in a snapshot.
    assert any(reader.events() for reader in joined)
