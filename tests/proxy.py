"""A TCP proxy on loopback that a test can hold and cut, to drop a client's stream at a chosen point.

Real clients (a browser's EventSource, a WebSocket library) connect to the proxy as to the
node. For each connection the test decides when the server's bytes stop reaching the client:
`hold()` buffers them, `cut_after(predicate)` lets them through until a server-sent event
(an SSE block ending in a blank line) matches, then drops the connection as a network
failure would. Faults for new connections: `answer` answers chosen requests itself with an
HTTP status (a load balancer's 502 or 503, a refused WebSocket upgrade) instead of forwarding
them, `resetting` resets every new connection (a node that cannot be reached), and
`reset_all()` drops every open one. `streams()` lists the open `/ws` and `/sse` connections.
Bounded: it serves only loopback and stops with the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

EventTest = Callable[[bytes], bool]
# Given a request line ("GET /sse?editions=en HTTP/1.1") and whether it asks for a WebSocket
# upgrade: the status to answer with instead of forwarding it, or None to forward it.
Answer = Callable[[str, bool], int | None]
REASONS = {403: "Forbidden", 426: "Upgrade Required", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class ProxiedConnection:
    """One client connection through the proxy."""

    index: int
    client_writer: asyncio.StreamWriter
    upstream_writer: asyncio.StreamWriter
    request_line: str = ""
    held: bool = False
    cut_when: EventTest | None = None
    pending: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self) -> None:
        """Drop both sides at once, as a network failure would (no more bytes either way)."""
        for writer in (self.client_writer, self.upstream_writer):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.closed.set()


def _path(request_line: str) -> str:
    parts = request_line.split(" ")
    return parts[1] if len(parts) > 1 else ""


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the node; see the module docstring."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: list[ProxiedConnection] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        # Applied to every new connection, in order: (hold it, cut it after an event matching ...).
        self.plans: list[tuple[bool, EventTest | None]] = []
        self.new_connection = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.answer: Answer | None = None
        self.resetting = False
        self.answered: list[tuple[str, int]] = []  # (request line, status) of each answered request

    def streams(self) -> list[ProxiedConnection]:
        """The open connections whose request was for /ws or /sse."""
        return [
            c
            for c in self.connections
            if not c.closed.is_set() and _path(c.request_line).startswith(("/ws", "/sse"))
        ]

    def reset_all(self) -> None:
        """Drop every open connection, as a network failure would."""
        for connection in self.connections:
            connection.close()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for connection in self.connections:
            connection.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(client_reader, client_writer)
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            self._tasks.discard(task)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.resetting:
            client_writer.transport.abort()
            return
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            client_writer.transport.abort()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        upgrade = b"\r\nupgrade: websocket" in head.lower()
        status = self.answer(request_line, upgrade) if self.answer is not None else None
        if status is not None:
            self.answered.append((request_line, status))
            body = b"proxy fault\n"
            client_writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(Exception):
                await client_writer.drain()
            client_writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        if not upgrade:
            # One request per connection, so that every request meets `answer` (a browser would
            # otherwise send its next request on a kept-alive connection, unseen).
            lines = [h for h in head.split(b"\r\n") if h and not h.lower().startswith(b"connection:")]
            head = b"\r\n".join([*lines, b"Connection: close", b"", b""])
        upstream_writer.write(head)
        connection = ProxiedConnection(len(self.connections), client_writer, upstream_writer, request_line)
        if self.plans:
            connection.held, connection.cut_when = self.plans.pop(0)
        self.connections.append(connection)
        self.new_connection.set()
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, connection),
            self._downstream(upstream_reader, connection),
            return_exceptions=True,
        )
        connection.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: ProxiedConnection
    ) -> None:
        while not connection.closed.is_set():
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)

    async def _downstream(self, reader: asyncio.StreamReader, connection: ProxiedConnection) -> None:
        while not connection.closed.is_set():
            data = await reader.read(65536)
            if not data:
                break
            connection.pending += data
            self.flush(connection)

    def flush(self, connection: ProxiedConnection) -> None:
        """Pass on what the connection's plan allows: nothing while held; whole SSE blocks up to
        and including the first that matches `cut_when`, then cut."""
        if connection.held or connection.closed.is_set():
            return
        if connection.cut_when is None:
            connection.client_writer.write(bytes(connection.pending))
            connection.pending.clear()
            return
        while (end := connection.pending.find(b"\n\n")) >= 0:
            block = bytes(connection.pending[: end + 2])
            del connection.pending[: end + 2]
            connection.client_writer.write(block)
            if connection.cut_when(block):
                connection.close()
                return

    def hold(self, connection: ProxiedConnection) -> None:
        """Stop passing the server's bytes to the client (they are kept, not sent)."""
        connection.held = True
