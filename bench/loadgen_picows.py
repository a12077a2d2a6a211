"""Load generator: picows WebSocket subscribers in one process (at most ~18,000 for the 20,000
file-descriptor limit; bench.fanout gives each process 9,000).

Started by bench.fanout. Connects its share of subscribers (round-robin over the
given URLs), prints "ready" once every one has its snapshot, then records when
each `bench <i>` line arrives at each subscriber, and checks order: every
subscriber must see lines 0..L-1 exactly once, in order. A fraction of the
subscribers can be "stalled": they stop reading (their socket's receive side is
paused) right after the snapshot. Writes a JSON summary with, per line, every
arrival time, and exits when all live subscribers have all lines or on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Stats:
    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.arrivals: list[list[float]] = [[] for _ in range(lines)]
        self.ready = 0
        self.complete = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.closed_early = 0
        self.reconnects = 0
        self.done = asyncio.Event()
        self.all_ready = asyncio.Event()
        self.expected_ready = 0
        self.expected_complete = 0


class Subscriber(WSListener):  # type: ignore[misc]
    def __init__(self, stats: Stats, stall: bool, url: str = "", reconnect: bool = False) -> None:
        self.stats = stats
        self.stall = stall
        self.url = url
        self.reconnect = reconnect
        self.cursor = ""
        self.next_index = 0
        self.is_ready = False
        self.finished = False

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.reconnect and not self.finished:
            asyncio.get_running_loop().create_task(self.resume())

    async def resume(self) -> None:
        """Reconnect with our cursor, like a real client after its server restarted."""
        self.stats.reconnects += 1
        for attempt in range(60):
            await asyncio.sleep(random.uniform(0.05, 0.25) * min(attempt + 1, 4))
            since = f"&since=en:{self.cursor}" if self.cursor else ""
            try:
                await ws_connect(lambda: self, self.url + since, websocket_handshake_timeout=30)
                return
            except (TimeoutError, OSError, Exception):
                continue

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            if not self.finished and not self.reconnect:
                self.stats.closed_early += 1
            transport.disconnect()
            return
        if kind != WSMsgType.TEXT:
            return
        now = time.time()
        payload = frame.get_payload_as_bytes()
        if not self.is_ready:
            if b'"snapshot"' in payload[:40]:
                self.is_ready = True
                stats = self.stats
                stats.ready += 1
                if stats.ready >= stats.expected_ready:
                    stats.all_ready.set()
                if self.stall:
                    # Stop reading: the kernel buffers fill and the server must cope.
                    transport.underlying_transport.pause_reading()
            return
        if not payload.startswith(b'{"type":"line"'):
            return
        message = orjson.loads(payload)
        self.cursor = message["cursor"]
        text = message["line"]["text"]
        if not text.startswith("bench "):
            return
        index = int(text[6:])
        if index == self.next_index:
            self.stats.arrivals[index].append(now)
            self.next_index += 1
            if self.next_index == self.stats.lines:
                self.finished = True
                self.stats.complete += 1
                if self.stats.complete >= self.stats.expected_complete:
                    self.stats.done.set()
        elif index < self.next_index:
            self.stats.duplicates += 1
        else:
            self.stats.out_of_order += 1
            self.next_index = index + 1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True, help="comma-separated ws:// URLs, round-robin")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--stalled", type=int, default=0, help="how many of this process's subscribers stall")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--reconnect", action="store_true", help="resume with the cursor after a drop")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))
    urls = args.urls.split(",")
    stats = Stats(args.lines)
    stats.expected_ready = args.count
    stats.expected_complete = args.count - args.stalled
    semaphore = asyncio.Semaphore(200)
    transports: list[WSTransport] = []

    async def open_one(i: int) -> None:
        async with semaphore:
            for attempt in range(5):
                try:
                    url = urls[i % len(urls)]
                    listener = Subscriber(stats, i < args.stalled, url, args.reconnect)
                    transport, _ = await ws_connect(
                        lambda listener=listener: listener,  # type: ignore[misc]
                        url,
                        websocket_handshake_timeout=30,
                    )
                    transports.append(transport)
                    return
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError("could not connect")

    await asyncio.gather(*(open_one(i) for i in range(args.count)))
    await asyncio.wait_for(stats.all_ready.wait(), 120)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stats.done.wait(), args.timeout)
    except TimeoutError:
        pass
    summary = {
        "arrivals": stats.arrivals,
        "complete": stats.complete,
        "expected_complete": stats.expected_complete,
        "duplicates": stats.duplicates,
        "out_of_order": stats.out_of_order,
        "closed_early": stats.closed_early,
        "reconnects": stats.reconnects,
    }
    with open(args.out, "w") as handle:  # noqa: ASYNC230 - once, after the measurement
        json.dump(summary, handle)
    for transport in transports:
        transport.disconnect()
    print("done", flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
    sys.exit(0)
