"""The HTTP layer before the application (issue 10, finding 2): oversized and malformed request heads
are answered with the API's JSON error and closed, a head that trickles in is cut off after
FLASHWIRE_HEADER_TIMEOUT_S, a 32 MiB header costs the node nothing, descriptors do not pile up,
and sockets beyond FLASHWIRE_MAX_SOCKETS are closed at once (service/server_limits.py).

Every client here is a raw socket, as an attacker's would be, against a real `flashwire serve`.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceNode, Stack, eventually

WS_HEAD = (
    "GET /ws?{query} HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


def ws_request(query: str = "editions=en", extra: str = "") -> bytes:
    return WS_HEAD.format(query=query, extra=extra).encode()


class Answer:
    """An HTTP response read off a raw socket, and whether the node closed the connection after it."""

    def __init__(self, raw: bytes, closed: bool) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/1.1 ") else 0
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        self.closed = closed

    def error(self) -> dict[str, Any]:
        """The JSON error body's `error` object (asserting that it is one, with the headers every
        response of the application carries: X-Content-Type-Options: nosniff, service/security_headers.py)."""
        assert self.headers.get("content-type") == "application/json", self.headers
        assert self.headers.get("x-content-type-options") == "nosniff", self.headers
        assert self.headers.get("cache-control") == "no-store", self.headers
        detail: dict[str, Any] = json.loads(self.body)["error"]
        assert detail["status"] == self.status
        return detail


def read_answer(sock: socket.socket, timeout_s: float = 5.0) -> Answer:
    """Everything the node sends until it closes the connection (or `timeout_s` passes)."""
    sock.settimeout(timeout_s)
    raw = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return Answer(raw, closed=True)
        if not chunk:
            return Answer(raw, closed=True)
        raw += chunk
    return Answer(raw, closed=False)


def exchange(port: int, request: bytes) -> Answer:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        return read_answer(sock)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


REFUSED = [
    pytest.param(ws_request("x=" + "a" * 9000), 414, "request-target", id="websocket-9000-byte-query"),
    pytest.param(
        b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: node\r\n\r\n",
        414,
        "request-target",
        id="http-9000-byte-target",
    ),
    pytest.param(
        ws_request(extra="X-Big: " + "b" * 9000 + "\r\n"),
        431,
        "headers",
        id="websocket-9000-byte-header-line",
    ),
    pytest.param(
        ws_request(extra="".join(f"X-{i}: v\r\n" for i in range(130))),
        431,
        "headers",
        id="websocket-130-headers",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
        431,
        "headers",
        id="http-20-KiB-header",
    ),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost node\r\n\r\n", 400, None, id="malformed-header"),
]


@pytest.mark.parametrize(("request_bytes", "status", "field"), REFUSED)
async def test_an_oversized_or_malformed_head_is_answered_with_a_json_error_and_closed(
    stack: Stack, request_bytes: bytes, status: int, field: str | None
) -> None:
    """414 (target over FLASHWIRE_MAX_URL_BYTES, or a WebSocket request line over websockets' 8,192
    bytes), 431 (head over FLASHWIRE_MAX_HEADER_BYTES; a WebSocket handshake over websockets' line
    or header-count limit), 400 (unparseable): the API's error body naming the field, with
    X-Content-Type-Options: nosniff like every answer of the application, Connection: close, and
    the connection closed."""
    node = stack.service()
    answer = await asyncio.to_thread(exchange, node.port, request_bytes)
    assert answer.status == status, answer.body
    detail = answer.error()
    assert detail.get("field") == field
    assert answer.headers.get("connection") == "close"
    assert answer.closed


async def test_oversized_websocket_handshakes_leave_no_descriptor_behind(stack: Stack) -> None:
    """200 handshakes with a 9,000-byte query, one after another: each is answered 414 (the JSON
    error) and closed, and the node's open descriptors come back to what they were."""
    node = stack.service()
    baseline = fd_count(node.pid)

    def attempt_all() -> list[Answer]:
        return [exchange(node.port, ws_request("x=" + "a" * 9000)) for _ in range(200)]

    answers = await asyncio.to_thread(attempt_all)
    assert {(answer.status, answer.closed) for answer in answers} == {(414, True)}
    assert all(answer.error()["field"] == "request-target" for answer in answers)

    async def back_to_baseline() -> bool:
        return fd_count(node.pid) <= baseline

    await eventually(back_to_baseline, timeout_s=5)


def stream_header(port: int, size: int) -> tuple[int, Answer]:
    """Send a request whose one header is `size` bytes, 64 KiB at a time, stopping as soon as the node
    answers; returns how much was sent by then, and the answer."""
    chunk = b"b" * 65536
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: ")
        sent = 0
        while sent < size:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable or not writable:
                break
            try:
                sent += sock.send(chunk[: size - sent])
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            sock.sendall(b"\r\n\r\n")  # never answered while streaming: finish the request
        return sent, read_answer(sock, timeout_s=10)


@pytest.mark.parametrize("size", [1 << 20, 32 << 20], ids=["1-MiB", "32-MiB"])
async def test_a_huge_header_is_refused_early_without_buffering_it(stack: Stack, size: int) -> None:
    """A 1 MiB or 32 MiB header sent as a stream is answered 431 before the client has sent it all,
    and the node's memory does not grow by it (it grew by 76 MB for 32 MiB before)."""
    node = stack.service()
    baseline = rss_kib(node.pid)
    sent, answer = await asyncio.to_thread(stream_header, node.port, size)
    assert answer.status == 431, answer.body[:200]
    assert answer.error()["field"] == "headers"
    assert answer.closed
    if size > 8 << 20:
        assert sent < size, "the node let the whole header in before answering"
    assert rss_kib(node.pid) - baseline < 8 * 1024


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, however the node's writes were split in segments
    (the head and the body may come apart), and not a byte of what follows it."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(1)
        assert chunk, raw
        raw += chunk
    head = raw.decode("latin-1").lower()
    length = int(head.partition("content-length:")[2].partition("\r\n")[0])
    while len(raw) < len(head) + length:
        chunk = sock.recv(len(head) + length - len(raw))
        assert chunk, raw
        raw += chunk
    return raw


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """A header, one byte every 0.2 s, until `stop` or the node closes."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Slow: ")
    while not stop.wait(0.2):
        try:
            sock.sendall(b"s")
        except OSError:
            return


@pytest.mark.parametrize("after_a_request", [False, True], ids=["from-connect", "on-keep-alive"])
async def test_a_trickled_head_is_cut_off_at_the_header_timeout(stack: Stack, after_a_request: bool) -> None:
    """With FLASHWIRE_HEADER_TIMEOUT_S=1, a head sent one byte at a time is answered 408 and closed
    about a second after the connection opened (or after the previous response, on a kept-alive
    connection), however long the client keeps trickling."""
    node = stack.service(FLASHWIRE_HEADER_TIMEOUT_S="1")
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        if after_a_request:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        stop = threading.Event()
        trickler = threading.Thread(target=trickle, args=(sock, stop))
        trickler.start()
        try:
            answer = await asyncio.to_thread(read_answer, sock, 4.0)
        finally:
            stop.set()
            trickler.join()
    elapsed = time.monotonic() - started
    assert answer.closed, "the trickled connection was still open after 4 s"
    assert answer.status == 408
    assert answer.error()["code"] == "timeout"  # with nosniff and no-store (Answer.error)
    assert 0.8 < elapsed < 2.5


def open_idle(node: ServiceNode) -> socket.socket | None:
    """A kept-alive connection that has been served one request (so it surely counts), or None if
    the node closed it instead."""
    sock = socket.create_connection(("127.0.0.1", node.port))
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        if sock.recv(12) == b"HTTP/1.1 200":
            return sock
    except OSError:
        pass
    sock.close()
    return None


async def served(node: ServiceNode, timeout_s: float = 3.0) -> socket.socket:
    """A served, kept-alive connection, once the node takes one (within `timeout_s`: a connection
    closed just before may still count for a moment)."""
    return await eventually(lambda: asyncio.to_thread(open_idle, node), timeout_s=timeout_s)


async def test_sockets_over_max_sockets_are_closed_at_once(stack: Stack) -> None:
    """With FLASHWIRE_MAX_SOCKETS=4 and four connections open, a fifth is closed before it sends a
    byte; once one of the four closes, a new connection is served again."""
    node = stack.service(FLASHWIRE_MAX_SOCKETS="4", FLASHWIRE_MAX_CONNECTIONS="4")
    held: list[socket.socket] = []
    try:
        for _ in range(4):
            held.append(await served(node))
        with socket.create_connection(("127.0.0.1", node.port)) as extra:
            started = time.monotonic()
            answer = await asyncio.to_thread(read_answer, extra, 2.0)
            assert answer.closed and answer.status == 0, answer.body
            assert time.monotonic() - started < 1.0
        held.pop().close()
        held.append(await served(node))
    finally:
        for sock in held:
            sock.close()
