"""Load generator: SSE readers of /sse in one process (bench.fanout gives each process 9,000).

Started by bench.fanout with the arguments of bench.loadgen_picows (bench.loadgen_args) and http://
URLs of /sse; writes the same JSON summary (bench.reader_check), so the two transports are
measured and checked the same way. Each reader is one raw asyncio protocol on uvloop sending
`GET /sse?... HTTP/1.1` and parsing the chunked event stream itself (bench.sse_stream): no HTTP
library per connection, so the load generator costs the machine about what the picows one does.
A reader is ready once it has the `snapshot` event; then every `bench <i>` line's arrival is
recorded at the moment its bytes are read (time.time()), before parsing. A stalled reader stops
reading after its snapshot, as in the WebSocket generator. No reconnection (`--reconnect` is for
the WebSocket storm only).
"""

from __future__ import annotations

import asyncio
import sys
import time
from functools import partial
from typing import cast
from urllib.parse import urlsplit

import orjson

from bench.loadgen_args import hold_readers, local_addr, parse, raise_fd_limit, reader_plans
from bench.reader_check import ReaderCheck, Stats, line_index
from bench.sse_stream import SseStream, StreamError

LINE_EVENT = b'{"type":"line"'


class SseReader(asyncio.Protocol):
    """One /sse stream: sends its request once connected, then checks each event."""

    def __init__(self, check: ReaderCheck, request: bytes, stall: bool) -> None:
        self.check = check
        self.stats = check.stats
        self.request = request
        self.stall = stall
        self.stream = SseStream()
        self.is_ready = False
        self.transport: asyncio.Transport | None = None
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but has its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        try:
            events = self.stream.feed(data)
        except StreamError as exc:
            self.error = str(exc)
            self.stats.closed_early += 1
            assert self.transport is not None
            self.transport.close()
            return
        for event in events:
            payload = event.data
            if not self.is_ready:
                if b'"snapshot"' in payload[:40]:
                    self.is_ready = True
                    self.stats.mark_ready()
                    if self.stall and self.transport is not None:
                        self.transport.pause_reading()
                        return
                continue
            if not payload.startswith(LINE_EVENT):
                continue
            index = line_index(orjson.loads(payload)["line"]["text"])
            if index is not None:
                self.check.arrived(index, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.check.finished and self.error is None:
            self.stats.closed_early += 1


def _same(reader: SseReader) -> SseReader:
    return reader


def request_for(url: str) -> tuple[str, int, bytes]:
    """(host, port, the request's bytes) for an http:// URL of /sse."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-store\r\n\r\n"
    )
    return host, port, request.encode()


async def main() -> None:
    args = parse()
    raise_fd_limit()
    plans = reader_plans(args)
    stats = Stats(args.lines)
    stats.expected_ready = args.count
    stats.expected_complete = args.count - args.stalled
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []

    async def open_one(i: int) -> None:
        plan = plans[i]
        host, port, request = request_for(plan.url)
        # One reader (and check) for every attempt: a reader due no line counts as complete once.
        reader = SseReader(ReaderCheck(stats, plan.expected), request, i < args.stalled)
        for attempt in range(5):
            try:
                transport, _ = await loop.create_connection(
                    partial(_same, reader), host, port, **local_addr(args)
                )
            except OSError:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            transports.append(transport)
            return
        raise RuntimeError("could not connect")

    def close_all() -> None:
        for transport in transports:
            transport.close()

    await hold_readers(args, stats, open_one, close_all)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
    sys.exit(0)
