"""Python memory per idle /ws or /sse reader, measured with tracemalloc inside the serving process.

    .venv/bin/python -m bench.connection_memory [--transport ws|sse] [--readers 5000] [--settle-s 3]

Runs the service the way `flashwire serve` does (uvicorn, websockets-sansio, the same options,
the default event loop) in this process, against a private redis-server, with tracemalloc on
from the start. A warm-up round of readers connects and leaves (so lazy imports and caches are
paid for), then the baseline snapshot is taken; N readers connect from a separate process
(this module with --hold, so the clients' memory is not counted), each subscribes to `en` by the
URL query and receives its snapshot (`--transport sse`: a GET /sse?editions=en over a plain
socket, read until its snapshot), and after `--settle-s` (the readers have been handed over
to direct writes and hold only idle state) the second snapshot is taken.

Reported: bytes of Python allocations per reader (live at the second snapshot and not at the
first, divided by N), in all and split by the package whose code made the allocation
(tracemalloc's most recent frame: a coroutine's frame counts where it was called): flashwire,
starlette, uvicorn, websockets, asyncio, other; `--top N` lists the N files that allocated most.
Memory that C code allocates outside Python's allocators (the kernel's socket buffers, libuv's
handles) is not included; the RSS figures of bench.fanout include it. Both snapshots are taken
in one run, so the figure is steady from run to run (within about 60 B on the 2-core machine).
Also reported: the serving process's resident memory (RSS, psutil) grown between the two
snapshots, per reader; it includes the C allocations above and tracemalloc's own bookkeeping,
so read it as an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from flashwire import cli
from flashwire.core.settings import Settings
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess

REPO = Path(__file__).resolve().parent.parent
# Package of an allocating file, first match wins; everything else is "other".
PACKAGES = (
    ("flashwire", (str(REPO / "service"), str(REPO / "flashwire"), str(REPO / "workers"))),
    ("starlette", ("/starlette/",)),
    ("uvicorn", ("/uvicorn/",)),
    ("websockets", ("/websockets/",)),
    ("asyncio", ("/asyncio/",)),
)


def package_of(filename: str) -> str:
    for name, markers in PACKAGES:
        if any(marker in filename for marker in markers):
            return name
    return "other"


def server_config(settings: Settings, port: int) -> uvicorn.Config:
    """uvicorn's configuration as `flashwire serve` builds it (flashwire/cli.py), logs kept quiet."""
    return cli.server_config(settings, "127.0.0.1", port, access_log=False)


class Readers:
    """N idle readers (WebSocket, or SSE for an http:// URL) in a child process (this module with
    --hold), so that their memory is not the server's."""

    def __init__(self, url: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.connection_memory", "--hold", url, "--readers", str(count)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def ready(self) -> None:
        """Returns once every reader has its snapshot (the child prints "ready")."""
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the readers' process failed: {line!r}")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


async def hold(url: str, count: int) -> None:
    """The child: `count` readers that each wait for their snapshot, then stay connected, idle
    (websockets answers the server's pings), until the process is killed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    handshakes = asyncio.Semaphore(100)  # within uvicorn's listen backlog
    connections: list[ClientConnection] = []

    async def subscribe() -> None:
        async with handshakes:
            ws = await connect(url, compression=None, open_timeout=60, max_queue=None)
            connections.append(ws)
            while b'"snapshot"' not in (await ws.recv(decode=False))[:40]:
                pass

    await asyncio.gather(*(subscribe() for _ in range(count)))
    print("ready", flush=True)
    await asyncio.Event().wait()


async def hold_sse(url: str, count: int) -> None:
    """The child for /sse: `count` plain sockets that each send the GET, read until their
    snapshot, then stay connected without reading (a heartbeat or two fits in the socket
    buffers), until the process is killed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    handshakes = asyncio.Semaphore(100)  # within uvicorn's listen backlog
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    request = f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    connections: list[asyncio.StreamWriter] = []

    async def subscribe() -> None:
        async with handshakes:
            reader, writer = await asyncio.open_connection(host, int(port))
            connections.append(writer)
            writer.write(request)
            received = b""
            while b'"snapshot"' not in received:
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError(f"the server closed an SSE stream: {received[:200]!r}")
                received += data

    await asyncio.gather(*(subscribe() for _ in range(count)))
    print("ready", flush=True)
    await asyncio.Event().wait()


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _until_connections(server: uvicorn.Server, count: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(server.server_state.connections) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(server.server_state.connections)} connections, expected {count}")
        await asyncio.sleep(0.1)


async def measure(
    config: uvicorn.Config, transport: str, readers: int, warmup: int, settle_s: float, top: int
) -> None:
    """Serve, take the two snapshots around `readers` idle readers, report, stop the server."""
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    url = f"{'ws' if transport == 'ws' else 'http'}://127.0.0.1:{config.port}/{transport}?editions=en"
    process = psutil.Process()
    children: list[Readers] = []
    try:
        progress(f"warm-up: {warmup} readers connect and leave")
        children.append(Readers(url, warmup))
        await children[-1].ready()
        children.pop().stop()
        await _until_connections(server, 0)
        await asyncio.sleep(settle_s)
        gc.collect()
        before = tracemalloc.take_snapshot()
        rss_before = process.memory_info().rss

        progress(f"baseline taken; {readers} readers connect")
        started = time.monotonic()
        children.append(Readers(url, readers))
        await children[-1].ready()
        connect_s = time.monotonic() - started
        await asyncio.sleep(settle_s)
        gc.collect()
        after = tracemalloc.take_snapshot()
        rss_after = process.memory_info().rss
        connections = len(server.server_state.connections)
        progress("second snapshot taken")
    finally:
        for child in children:
            child.stop()
    print(
        f"{readers:,} idle /{transport} readers ({connections:,} connections open at the snapshot; "
        f"connected and subscribed in {connect_s:.1f} s)"
    )
    report(before, after, readers, top)
    print(f"RSS grown per reader: {(rss_after - rss_before) / readers:,.0f} B")
    server.should_exit = True
    await asyncio.wait_for(serving, 60)


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, readers: int, top: int) -> None:
    """Bytes per reader of the allocations live in `after` but not in `before`: in all, by package,
    and the `top` files."""
    by_file = after.compare_to(before, "filename")
    by_package: dict[str, int] = {}
    for stat in by_file:
        package = package_of(stat.traceback[0].filename)
        by_package[package] = by_package.get(package, 0) + stat.size_diff
    print(f"Python memory per reader: {sum(by_package.values()) / readers:,.0f} B")
    for package, size in sorted(by_package.items(), key=lambda item: -item[1]):
        print(f"  {package:<11} {size / readers:>8,.0f} B")
    if top:
        print(f"the {top} files that allocated most, per reader:")
        for stat in by_file[:top]:
            print(f"  {stat.size_diff / readers:>8,.0f} B  {stat.traceback[0].filename}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("ws", "sse"), default="ws")
    parser.add_argument("--readers", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200, help="readers that connect and leave first")
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=0, help="also list the N files that allocated most")
    parser.add_argument("--hold", metavar="URL", help=argparse.SUPPRESS)  # the readers' child process
    args = parser.parse_args()
    if args.hold:
        asyncio.run((hold_sse if args.hold.startswith("http://") else hold)(args.hold, args.readers))
        return
    logging.basicConfig(level=logging.WARNING)
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisProcess(Path(tmp) / "redis", appendonly=False, tied_to_parent=True)
        redis.start()
        try:
            # Every reader comes from 127.0.0.1: the per-address cap must not refuse them, and the
            # socket cap must hold them and the benchmark's own requests.
            env = {
                "REDIS_URL": redis.url,
                "FLASHWIRE_MAX_CONNECTIONS": str(args.readers + 100),
                "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT": str(args.readers + 100),
                "FLASHWIRE_MAX_SOCKETS": str(args.readers + 200),
            }
            config = server_config(Settings.from_env(env), free_port())
            # The event loop `flashwire serve` gets: uvloop when it is installed.
            with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
                runner.run(
                    measure(config, args.transport, args.readers, args.warmup, args.settle_s, args.top)
                )
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
