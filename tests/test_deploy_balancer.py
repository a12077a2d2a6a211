"""The load balancer of docker-compose.yml (deploy/haproxy/haproxy.cfg), run for real: Debian's
haproxy with that file in front of two `flashwire serve` processes, WebSocket and SSE readers
through it (issue 13, the docker-compose item).

The file is used as it is, except for what only Docker provides: the `bind` port and the nodes'
addresses (`server service-N service-N:8000`) are replaced by loopback ones, each replacement
checked to happen exactly once. One test also lowers the reader timeouts, to show on a short
clock that the nodes' heartbeats, not luck, keep an idle reader's connection open.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from flashwire.dev.ports import free_port
from tests.conftest import ROOT, Reader, ServiceNode, Stack, close_promptly, open_reader, post_line

CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NODES = 2
DEFAULT_HEARTBEAT_S = 15.0
"""FLASHWIRE_HEARTBEAT_S's default (docs/configuration.md), what a deployment runs with."""
TIMEOUT_LINE = re.compile(r"^\s*timeout (server|client|tunnel) (\d+)s\s*$", re.MULTILINE)
# The loopback addresses the readers connect from, so that the node's log shows whether the
# balancer passed the reader's own address on (the balancer itself connects from 127.0.0.1).
WS_CLIENT = "127.0.0.2"
SSE_CLIENT = "127.0.0.3"
LINES = 5


def haproxy_binary() -> str:
    """Debian's haproxy (`make haproxy` installs it, as `make chromium` installs the browser)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        pytest.fail("haproxy is not installed: run `make haproxy` (Debian's package)")
    return found


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with its one occurrence of `old` replaced; fails if there is not exactly one."""
    assert text.count(old) == 1, f"{CONFIG} should contain {old!r} exactly once"
    return text.replace(old, new)


def local_config(port: int, nodes: list[ServiceNode], reader_timeout_s: int | None = None) -> str:
    """deploy/haproxy/haproxy.cfg for loopback: bound to `port`, balancing over `nodes`; with
    `reader_timeout_s`, timeouts server, client and tunnel lowered to it."""
    text = CONFIG.read_text()
    assert len(re.findall(r"^\s*server ", text, re.MULTILINE)) == len(nodes), "one server line a node"
    text = replace_once(text, "bind :8080", f"bind 127.0.0.1:{port}")
    for index, node in enumerate(nodes, start=1):
        text = replace_once(
            text,
            f"server service-{index} service-{index}:8000",
            f"server service-{index} 127.0.0.1:{node.port}",
        )
    if reader_timeout_s is not None:
        text, count = TIMEOUT_LINE.subn(rf"    timeout \1 {reader_timeout_s}s", text)
        assert count == 3
    return text


@dataclass
class Balancer:
    """A running haproxy on 127.0.0.1:`port`."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_balancer(tmp_path: Path, nodes: list[ServiceNode], reader_timeout_s: int | None = None) -> Balancer:
    """haproxy in the foreground (-db) with the local config, once it passes requests to a node."""
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(local_config(port, nodes, reader_timeout_s))
    log_path = tmp_path / "haproxy.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    balancer = Balancer(port, process, log_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited:\n{balancer.log()}")
        try:
            if httpx.get(f"{balancer.url}/healthz", timeout=1).status_code == 200:
                return balancer
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop_balancer(balancer)
    raise RuntimeError(f"haproxy passed no request within 10 s:\n{balancer.log()}")


def stop_balancer(balancer: Balancer) -> None:
    balancer.process.terminate()
    try:
        balancer.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        balancer.process.kill()
        balancer.process.wait()


@pytest.fixture
def nodes(stack: Stack) -> list[ServiceNode]:
    """A worker and two service nodes that trust the balancer's address (127.0.0.1)."""
    stack.worker()
    return [stack.service(FLASHWIRE_TRUSTED_PROXIES="127.0.0.1") for _ in range(NODES)]


@pytest.fixture
def balancer(tmp_path: Path, nodes: list[ServiceNode]) -> Iterator[Balancer]:
    started = start_balancer(tmp_path, nodes)
    yield started
    stop_balancer(started)


class SseReader:
    """An SSE reader whose messages (each `data:` line, parsed) are read as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for line in self.response.aiter_lines():
                if line.startswith("data:"):
                    self.messages.put_nowait(orjson.loads(line[5:]))
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    async def next_of(self, *types: str, timeout_s: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.messages.get()
                if message["type"] in types:
                    return message

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def sse_reader(url: str, local_address: str) -> AsyncIterator[SseReader]:
    """GET /sse?editions=en from `local_address`, as a browser would (it accepts gzip too)."""
    transport = httpx.AsyncHTTPTransport(local_address=local_address)
    async with httpx.AsyncClient(
        base_url=url, transport=transport, timeout=httpx.Timeout(5, read=None)
    ) as client:
        async with client.stream("GET", "/sse?editions=en") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SseReader(response)
            try:
                yield reader
            finally:
                await reader.stop()


async def ws_reader(url: str) -> Reader:
    return await open_reader(url, "editions=en", local_addr=(WS_CLIENT, 0))


def test_reader_timeouts_far_above_the_heartbeat() -> None:
    """Every timeout a reader's connection can meet is at least 20 heartbeats (of the default 15 s),
    so a live reader is never cut by the balancer; only a dead one (docs/protocol.md section 9)."""
    timeouts = {name: int(value) for name, value in TIMEOUT_LINE.findall(CONFIG.read_text())}
    assert set(timeouts) == {"server", "client", "tunnel"}
    for name, value in timeouts.items():
        assert value >= 20 * DEFAULT_HEARTBEAT_S, f"timeout {name} {value}s"


async def test_readers_through_the_balancer_get_lines_at_once(
    stack: Stack, nodes: list[ServiceNode], balancer: Balancer
) -> None:
    """A WebSocket reader and an SSE reader through the balancer land on the two nodes; each line
    posted through it reaches them as soon as it reaches an SSE reader connected to the node
    directly (HAProxy without `option http-no-delay` held each SSE event about 200 ms, Linux's
    limit for data sent with MSG_MORE). Each node knows its reader by the reader's own address
    (X-Forwarded-For from a trusted proxy), not the balancer's, and counts it out as soon as it
    leaves (`option abortonclose`; without it an SSE stream stays open on the node until its next
    write fails, up to two heartbeats)."""
    ws = await ws_reader(balancer.ws_url)
    try:
        await ws.next_of("snapshot")
        async with sse_reader(balancer.url, SSE_CLIENT) as sse:
            sse_node = (await sse.next_of("hello"))["node"]
            await sse.next_of("snapshot")
            names = await node_names(nodes)
            assert {ws.messages[0]["node"], sse_node} == set(names)
            async with sse_reader(nodes[names.index(sse_node)].url, "127.0.0.1") as direct:
                await direct.next_of("snapshot")
                token = await stack.token()
                delays_s: list[float] = []
                async with httpx.AsyncClient(base_url=balancer.url) as client:
                    for number in range(LINES):
                        line = await post_line(
                            client, token, f"Flood barrier closed at dawn, update {number}"
                        )
                        direct_line = await direct.next_of("line", timeout_s=2.0)
                        direct_at = time.monotonic()
                        sse_line = await sse.next_of("line", timeout_s=2.0)
                        delays_s.append(time.monotonic() - direct_at)
                        ws_line = await ws.next_of("line", timeout_s=2.0)
                        assert (
                            ws_line["line"]["id"]
                            == sse_line["line"]["id"]
                            == direct_line["line"]["id"]
                            == line["id"]
                        )
            delays_s.sort()
            shown = " ".join(f"{delay_s:.3f}" for delay_s in delays_s)
            print(f"SSE through the balancer, later than direct by (s): {shown}")
            assert delays_s[LINES // 2] < 0.1, delays_s
    finally:
        await close_promptly([ws])
    # Well within the nodes' 5 s heartbeat here, when the node next writes to the stream.
    await logged(nodes, rf"reader connection ws {re.escape(WS_CLIENT)}:", timeout_s=3)
    await logged(nodes, rf"reader connection sse {re.escape(SSE_CLIENT)}:", timeout_s=3)


async def node_names(nodes: list[ServiceNode]) -> list[str]:
    """Each node's name, as its /healthz (and its readers' hello) gives it."""
    async with httpx.AsyncClient() as client:
        return [(await client.get(f"{node.url}/healthz")).json()["node"] for node in nodes]


async def logged(nodes: list[ServiceNode], pattern: str, timeout_s: float = 5.0) -> None:
    """Wait until a node's log has a line matching `pattern`."""
    deadline = time.monotonic() + timeout_s
    while not any(re.search(pattern, node.log()) for node in nodes):
        assert time.monotonic() < deadline, (
            f"no {pattern!r} in\n" + "".join(node.log() for node in nodes)[-3000:]
        )
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_idle_readers_stay_open_on_heartbeats(stack: Stack, tmp_path: Path) -> None:
    """With the nodes' heartbeat at 1 s and the balancer's reader timeouts lowered to 3 s, a
    WebSocket and an SSE reader stay open through 7 s without a line, and then get one: the
    timeouts count inactivity, in both directions of an SSE stream (the client sends nothing), and
    a heartbeat resets them. The same holds at scale: 15 s heartbeats against 300 s and 3600 s."""
    stack.worker()
    nodes = [
        stack.service(FLASHWIRE_HEARTBEAT_S="1", FLASHWIRE_TRUSTED_PROXIES="127.0.0.1") for _ in range(NODES)
    ]
    balancer = start_balancer(tmp_path, nodes, reader_timeout_s=3)
    try:
        ws = await ws_reader(balancer.ws_url)
        try:
            await ws.next_of("snapshot")
            async with sse_reader(balancer.url, SSE_CLIENT) as sse:
                await sse.next_of("snapshot")
                await asyncio.sleep(7)
                assert not sse.ended.is_set(), balancer.log()[-2000:]
                token = await stack.token()
                async with httpx.AsyncClient(base_url=balancer.url) as client:
                    line = await post_line(client, token, "Night train services resume")
                assert (await ws.next_of("line"))["line"]["id"] == line["id"]
                assert (await sse.next_of("line"))["line"]["id"] == line["id"]
                assert sum(message["type"] == "heartbeat" for message in ws.messages) >= 5
        finally:
            await close_promptly([ws])
    finally:
        stop_balancer(balancer)
