"""A WebSocket client that sends ping frames and never reads cannot grow the node's memory (issue 10,
finding 1).

Before the fix uvicorn wrote a pong for every ping, whatever the connection's unsent bytes, and
kept reading: about 50 MB of pings raised the node's memory by about 46 MB. Now the pongs count
against the connection's send budget (FLASHWIRE_SEND_BUFFER_MAX_BYTES): over it the node stops
reading from the client, and a client that takes nothing for FLASHWIRE_HEARTBEAT_S is cut off
(service/ws_protocol.py). Driven from outside, with a raw socket, against a real `flashwire serve`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import select
import socket
import struct
import sys
import time
from pathlib import Path

import httpx
import pytest

from flashwire.core.protocol import TOO_MANY_PINGS
from tests.conftest import ManagedProcess, Reader, Stack, eventually, metric, open_reader, post_line
from tests.rawws import RawWebSocket

FLOOD_BYTES = 50 * 1024 * 1024
# Memory the node may gain while flooded: the send budget (64 KiB), a read's worth of frames
# (256 KiB) and the allocator's noise, with room to spare; the flood itself is 50 MB.
MAX_GROWTH_KIB = 8 * 1024
# The client counts as paused once the node has taken none of its bytes for this long.
PAUSED_AFTER_S = 1.0
HEARTBEAT_S = "2"


def ping_frame(payload: bytes) -> bytes:
    """A masked ping frame, as a client sends it (RFC 6455 section 5.2): at most 125 bytes of payload."""
    assert len(payload) <= 125
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + masked


def rss_kib(pid: int) -> int:
    """The process's resident memory (VmRSS in /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def flood(
    sock: socket.socket, total: int, frames_per_send: int = 512, interval_s: float = 0.0
) -> tuple[int, str]:
    """Send ping frames, `frames_per_send` at a time and `interval_s` apart, never reading, until
    `total` bytes are out, the node has taken nothing for PAUSED_AFTER_S, or it has dropped the
    connection. Returns the bytes sent and which it was: "sent", "paused" or "closed"."""
    batch = ping_frame(b"p" * 125) * frames_per_send
    pending = memoryview(batch)
    sent = 0
    sock.setblocking(False)
    while sent < total:
        if interval_s:
            time.sleep(interval_s)
        _, writable, _ = select.select([], [sock], [], PAUSED_AFTER_S)
        if not writable:
            return sent, "paused"
        try:
            count = sock.send(pending)
        except (BrokenPipeError, ConnectionResetError):
            return sent, "closed"
        sent += count
        pending = pending[count:] or memoryview(batch)
    return sent, "sent"


def dropped(sock: socket.socket, timeout_s: float) -> bool:
    """Does the node drop the connection within `timeout_s`? Watched without reading: a node that
    only closes gracefully would get its FIN out only once the client took what was queued before
    it, which a client that never reads never does (poll's POLLHUP, POLLERR, POLLRDHUP)."""
    poller = select.poll()
    poller.register(sock, select.POLLHUP | select.POLLERR | select.POLLRDHUP)
    return bool(poller.poll(timeout_s * 1000))


async def test_a_ping_flood_that_never_reads_does_not_grow_the_nodes_memory(
    stack: Stack, readers: list[Reader]
) -> None:
    """50 MB of pings from a client that never reads: the node's memory grows by less than 8 MB
    (it closes the client with 1008 after its tenth ping, and before that answers only the last
    ping of what it reads at once, RFC 6455 section 5.5.3), another reader gets a line posted
    during the flood, and the node lets the flooding client go within a few heartbeat periods."""
    stack.worker()
    node = stack.service(FLASHWIRE_HEARTBEAT_S=HEARTBEAT_S)
    editor = await stack.token()
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")

    flooder = RawWebSocket(node.port, "editions=en", rcvbuf=4096)
    try:
        baseline = peak = rss_kib(node.pid)
        flooding = asyncio.create_task(asyncio.to_thread(flood, flooder.sock, FLOOD_BYTES))
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            await post_line(client, editor, "Ceasefire announced in the north")
        [event] = await reader.events(1)
        assert event["line"]["text"] == "Ceasefire announced in the north"
        while not flooding.done():
            peak = max(peak, rss_kib(node.pid))
            await asyncio.sleep(0.02)
        sent, outcome = await flooding
        for _ in range(10):  # what the node read last is handled now
            peak = max(peak, rss_kib(node.pid))
            await asyncio.sleep(0.02)

        growth = peak - baseline
        assert growth < MAX_GROWTH_KIB, f"node grew by {growth} KiB after {sent} bytes of pings ({outcome})"
        # The node lets the flooding client go (its socket closed; the other reader stays).
        async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:

            async def one_reader_left() -> bool:
                return metric((await client.get("/metrics")).text, "flashwire_connections") == 1

            await eventually(one_reader_left, timeout_s=3 * float(HEARTBEAT_S))
    finally:
        flooder.close()


# A service node exactly as `flashwire serve` configures it (flashwire.cli.server_config), listening
# on a Unix socket, as behind a proxy on the same host. There the kernel holds at most a couple of
# hundred kilobytes a connection (net.core.wmem_default), where loopback TCP grows its buffers to
# megabytes (net.ipv4.tcp_wmem): pongs get past the kernel into the node's own buffer within a
# second, so the send budget is what bounds them. With "no-ping-limit" the cap on a client's pings
# (10 at once, then 1 a second) is lifted, so that the send budget, the defence behind it, can be
# seen at work on its own.
UDS_NODE = """
import sys, uvicorn
from flashwire.cli import server_config
from flashwire.core.settings import Settings
config = server_config(Settings.from_env(), "127.0.0.1", 0)
config.uds = sys.argv[1]
if "no-ping-limit" in sys.argv[2:]:
    config.ws.ping_burst = 10**9
uvicorn.Server(config).run()
"""


def start_uds_node(stack: Stack, path: Path, *options: str, **env: str) -> ManagedProcess:
    """A node on the Unix socket `path` (`options`: "no-ping-limit"), stopped with the stack;
    returns once /healthz answers."""
    node = ManagedProcess(
        [sys.executable, "-c", UDS_NODE, str(path), *options],
        {**stack.env, **env},
        stack.tmp_path / "uds-node.log",
    ).start()
    stack.processes.append(node)
    deadline = time.monotonic() + 20
    while True:
        assert node.alive(), node.log()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(str(path))
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
                if probe.recv(12) == b"HTTP/1.1 200":
                    return node
            except OSError:
                pass
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)


def uds_websocket(path: Path, query: str) -> socket.socket:
    """A WebSocket over the Unix socket `path`, handshake done; the 101's head is read, nothing else."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws?{query} HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_pongs_count_against_the_send_budget_and_a_client_over_it_is_paused_then_cut_off(
    stack: Stack,
) -> None:
    """With the ping limit lifted (the send budget is the defence behind it), pings sent one at a
    time, half a millisecond apart, so that the node reads and answers them nearly one by one: once
    the pongs the client does not read are over FLASHWIRE_SEND_BUFFER_MAX_BYTES the node stops
    reading from it (the client's sends stall) well before uvicorn's keepalive could give up on it
    (2 heartbeat periods), and after a heartbeat period in which the client took nothing the node
    drops it."""
    heartbeat_s = 3.0
    path = stack.tmp_path / "node.sock"
    node = start_uds_node(
        stack,
        path,
        "no-ping-limit",
        FLASHWIRE_SEND_BUFFER_MAX_BYTES="1024",
        FLASHWIRE_HEARTBEAT_S=str(heartbeat_s),
    )
    flooder = uds_websocket(path, "editions=en")
    try:
        baseline = rss_kib(node.pid)
        started = time.monotonic()
        sent, outcome = await asyncio.to_thread(flood, flooder, 8 * 1024 * 1024, 1, 0.0005)
        paused_after_s = time.monotonic() - started - PAUSED_AFTER_S
        assert outcome == "paused", f"the node took {sent} bytes of pings ({outcome})"
        assert paused_after_s < 1.5 * heartbeat_s, f"paused only after {paused_after_s:.1f} s"
        assert rss_kib(node.pid) - baseline < MAX_GROWTH_KIB
        assert await asyncio.to_thread(dropped, flooder, 2 * heartbeat_s)
    finally:
        flooder.close()


# -- what a client may send: pings are capped (issue 10, follow-up) --------------------------------

# The node's CPU time a flood may cost, in seconds: the first read's worth of frames (256 KiB) and
# the close, with room for a loaded machine. Without the cap the node reads the flood at full
# speed, about a core: seconds of CPU over the flood's few seconds.
MAX_FLOOD_CPU_S = 0.5
# How long a flood is kept up, at most, and how soon the node must have closed it (1008).
FLOOD_S = 4.0
CLOSED_WITHIN_S = 2.0


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, unfragmented client frame of at most 125 bytes of payload (RFC 6455 section 5.2)."""
    assert len(payload) <= 125
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


FLOOD_FRAMES = {
    "protocol-pings": masked_frame(0x9, b"p" * 125),
    "unsolicited-pongs": masked_frame(0xA, b"p" * 125),
    "ping-messages": masked_frame(0x1, b'{"type":"ping"}'),
}


def cpu_s(pid: int) -> float:
    """The process's CPU time so far, user and system (utime + stime in /proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FloodResult:
    """What a flooding client saw: the close frame (code, reason) and when, and when the node
    dropped the connection (seconds from the start of the flood)."""

    def __init__(self) -> None:
        self.close: tuple[int, str] | None = None
        self.closed_after_s: float | None = None
        self.ended_after_s: float | None = None
        self.sent = 0


def _server_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete (unmasked) server frames off the front of `buffer`: (opcode, payload)."""
    frames = []
    while len(buffer) >= 2:
        length, offset = buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                break
            length, offset = struct.unpack("!H", buffer[2:4])[0], 4
        elif length == 127:
            if len(buffer) < 10:
                break
            length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
        if len(buffer) < offset + length:
            break
        frames.append((buffer[0] & 0x0F, bytes(buffer[offset : offset + length])))
        del buffer[: offset + length]
    return frames


def flood_and_read(sock: socket.socket, frame: bytes, leftover: bytes, limit_s: float) -> FloodResult:
    """Send `frame` over and over as fast as the node takes it, for `limit_s` at most, reading
    everything the node sends meanwhile (so a close frame can reach us) and going on sending after
    it, as an attacker would, until the node drops the connection."""
    result = FloodResult()
    batch = memoryview(frame * 512)
    pending = batch
    received = bytearray(leftover)
    sock.setblocking(False)
    started = time.monotonic()
    sending = True
    while (elapsed := time.monotonic() - started) < limit_s:
        readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.05)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                result.ended_after_s = elapsed
                return result
            received += chunk
            for opcode, payload in _server_frames(received):
                if opcode == 0x8 and result.close is None:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    result.close = (code, payload[2:].decode())
                    result.closed_after_s = elapsed
        if writable:
            try:
                count = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                sending = False
                continue
            result.sent += count
            pending = pending[count:] or batch
    return result


@pytest.mark.parametrize("kind", list(FLOOD_FRAMES))
async def test_a_client_flooding_pings_is_closed_1008_at_little_cpu_cost(stack: Stack, kind: str) -> None:
    """A client that sends protocol pings, unsolicited pongs or `{"type":"ping"}` messages as fast
    as it can, reading everything, is closed within a second or two with 1008 and the reason
    `too many pings: ...`, then dropped while it goes on sending; the node spends less than half a
    second of CPU on it (it read the flood at full speed before, about a core, until the keepalive
    ended it, or never, for a client that answers it). The connection's log line says the server
    closed it, and /metrics counts it."""
    node = stack.service()  # FLASHWIRE_HEARTBEAT_S=5: the keepalive alone takes 10 s
    flooder = RawWebSocket(node.port, "editions=en")
    try:
        before = cpu_s(node.pid)
        result = await asyncio.to_thread(
            flood_and_read, flooder.sock, FLOOD_FRAMES[kind], flooder.buffer, FLOOD_S
        )
        await asyncio.sleep(0.2)  # what the node read last is handled now
        spent = cpu_s(node.pid) - before
    finally:
        flooder.close()
    assert result.close == (1008, TOO_MANY_PINGS), (kind, result.close, result.sent)
    assert result.closed_after_s is not None and result.closed_after_s < CLOSED_WITHIN_S
    assert result.ended_after_s is not None and result.ended_after_s < CLOSED_WITHIN_S
    assert spent < MAX_FLOOD_CPU_S, f"the node spent {spent:.2f} s of CPU on {result.sent} bytes of {kind}"

    async def logged() -> str | None:
        lines = [line for line in node.log().splitlines() if "reader connection ws" in line]
        return lines[0] if lines else None

    line = await eventually(logged)
    assert line.endswith(f'closed by server, 1008 "{TOO_MANY_PINGS}"'), line
    assert node.log().count("(1008): too many pings") == 1, node.log()[-2000:]
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    assert metric(text, "flashwire_ping_limit_closed_total") == 1


async def test_a_client_that_keeps_sending_after_a_close_is_dropped(stack: Stack) -> None:
    """After the node's close frame (here a 4400 for an unknown message type), a client that goes on
    sending messages instead of answering the close is dropped within a second, after ten more
    frames, instead of being read at full speed until uvicorn's closing timeout (10 s), with one
    warning in the log."""
    node = stack.service()
    flooder = RawWebSocket(node.port, "editions=en")
    try:
        flooder.sock.sendall(masked_frame(0x1, b'{"type":"nonsense"}'))
        before = cpu_s(node.pid)
        result = await asyncio.to_thread(
            flood_and_read, flooder.sock, masked_frame(0x1, b'{"type":"x"}'), flooder.buffer, FLOOD_S
        )
        await asyncio.sleep(0.2)
        spent = cpu_s(node.pid) - before
    finally:
        flooder.close()
    assert result.close == (4400, "type: unknown message type 'nonsense'"), result.close
    assert result.ended_after_s is not None and result.ended_after_s < 1.0, result.ended_after_s
    assert spent < MAX_FLOOD_CPU_S, f"the node spent {spent:.2f} s of CPU on {result.sent} bytes"
    # One warning, not one per frame of what the node had read at once.
    assert node.log().count("aborted: it kept sending after the close frame") == 1, node.log()[-2000:]


async def test_a_client_with_keepalive_and_occasional_pings_is_never_closed(
    stack: Stack, readers: list[Reader]
) -> None:
    """A websockets client with keepalive pings every 2 s (ten times its default rate) that also
    sends `{"type":"ping"}` every 3 s, 0.83 pings a second in all, under the 1 a second the node
    allows, stays connected: each ping message is answered with a pong, and a line posted at the
    end arrives."""
    stack.worker()
    node = stack.service(FLASHWIRE_HEARTBEAT_S="1")  # the node's own keepalive every second too
    editor = await stack.token()
    reader = await open_reader(node.ws_url, "editions=en", ping_interval=2.0, ping_timeout=5.0)
    readers.append(reader)
    await reader.next_of("snapshot")
    for _ in range(3):
        await asyncio.sleep(3.0)
        await reader.ws.send('{"type":"ping"}')
        await reader.next_of("pong", timeout_s=2.0)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        await post_line(client, editor, "Talks resume in Geneva")
    [event] = await reader.events(1)
    assert event["line"]["text"] == "Talks resume in Geneva"
    assert reader.ws.close_code is None
