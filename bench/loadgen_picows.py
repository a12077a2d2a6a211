"""Load generator: picows WebSocket subscribers in one process (at most ~18,000 for the 20,000
file-descriptor limit; bench.fanout gives each process 9,000).

Started by bench.fanout. Connects its share of subscribers (round-robin over the
given URLs), prints "ready" once every one has its snapshot, then records when
each `bench <i>` line arrives at each subscriber, and checks order: every
subscriber must see lines 0..L-1 (or, with `--seed`, the lines its random filter
matches: bench.filters) exactly once, in order (bench.reader_check). A fraction of the
subscribers can be "stalled": they stop reading (their socket's receive side is
paused) right after the snapshot. Writes a JSON summary with, per line, every
arrival time, and exits when all live subscribers have all lines or on timeout.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.loadgen_args import hold_readers, local_addr, parse, raise_fd_limit, reader_plans
from bench.reader_check import ReaderCheck, Stats, line_index

__all__ = ["Stats", "Subscriber"]  # bench.burst subclasses Subscriber and builds on Stats


class Subscriber(WSListener):  # type: ignore[misc]
    def __init__(
        self,
        stats: Stats,
        stall: bool,
        url: str = "",
        reconnect: bool = False,
        expected: Sequence[int] | None = None,
    ) -> None:
        """A reader due `expected` lines (None: every line), checked by its ReaderCheck."""
        self.check = ReaderCheck(stats, expected)
        self.stats = stats
        self.connect_kw: dict[str, Any] = {}  # create_connection's extra keywords (--source)
        self.stall = stall
        self.url = url
        self.reconnect = reconnect
        self.cursor = ""
        self.is_ready = False

    @property
    def finished(self) -> bool:
        """Whether this reader has all its lines (bench.burst's subclass sets it itself)."""
        return self.check.finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self.check.finished = value

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
                await ws_connect(
                    lambda: self, self.url + since, websocket_handshake_timeout=30, **self.connect_kw
                )
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
                self.stats.mark_ready()
                if self.stall:
                    # Stop reading: the kernel buffers fill and the server must cope.
                    transport.underlying_transport.pause_reading()
            return
        if not payload.startswith(b'{"type":"line"'):
            return
        message = orjson.loads(payload)
        self.cursor = message["cursor"]
        index = line_index(message["line"]["text"])
        if index is not None:
            self.check.arrived(index, now)


async def main() -> None:
    args = parse()
    raise_fd_limit()
    plans = reader_plans(args)
    stats = Stats(args.lines)
    stats.expected_ready = args.count
    stats.expected_complete = args.count - args.stalled
    transports: list[WSTransport] = []

    async def open_one(i: int) -> None:
        plan = plans[i]
        # One listener (and check) for every attempt: a reader due no line counts as complete once.
        listener = Subscriber(stats, i < args.stalled, plan.url, args.reconnect, plan.expected)
        listener.connect_kw = local_addr(args)
        for attempt in range(5):
            try:
                transport, _ = await ws_connect(
                    lambda listener=listener: listener,  # type: ignore[misc]
                    plan.url,
                    websocket_handshake_timeout=30,
                    **listener.connect_kw,
                )
                transports.append(transport)
                return
            except OSError:
                await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError("could not connect")

    def close_all() -> None:
        for transport in transports:
            transport.disconnect()

    await hold_readers(args, stats, open_one, close_all)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
    sys.exit(0)
