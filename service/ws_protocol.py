"""The WebSocket protocol of a service node: uvicorn's websockets-sansio protocol, with every byte
the server writes on its own counted against the connection's send budget.

uvicorn answers each ping frame by writing the pong at once, whatever the connection's write
buffer holds, and keeps reading: a client that sends pings and never reads makes the node buffer
every pong (about 50 MB of pings held about 46 MB of the node's memory, issue 10). The budget is
the slow-reader limit the hub already applies to the frames it writes directly,
`FLASHWIRE_SEND_BUFFER_MAX_BYTES` (service/wire.py, docs/protocol.md section 12). Here:

- **Flow control** (asyncio's `pause_writing` / `resume_writing`): the transport's high-water mark
  is the budget, so when the bytes the client has not taken go over it the node stops reading
  from the client; it reads again once they drain below a quarter of it (the low-water mark). A
  client that does not read cannot make the node write more by sending more.
- **Pongs within the budget**: a ping that arrives while the budget is spent, and all but the last
  of a batch read at once, get no pong. RFC 6455 section 5.5.3 allows this: an endpoint that has
  not yet answered earlier pings may answer only the most recent one.
- **Stalled connections are cut off**: when the unsent bytes are over the budget (or the
  connection is closing with bytes unsent) and the client has taken none of them for `stall_s`
  seconds (`FLASHWIRE_HEARTBEAT_S`, the period a peer that stopped reading gets in
  service/ws.py's `_close`), the connection is aborted: a close frame could not get out. A
  connection whose application has finished is aborted if it is still open `stall_s` after
  uvicorn's own closing timeout.

Pongs within the budget bound the memory a ping flood costs, not the CPU: a client that floods
pings (and reads, or answers the keepalive) would be read at full speed for as long as it likes,
10-15 MB/s of frames parsed, about a core. So what a client may send on its own is capped too:

- **Pings** (`PingBudget`, a token bucket per connection): protocol ping frames, unsolicited pong
  frames (RFC 6455 section 5.5.3 allows them as a one-way heartbeat) and the protocol's
  `{"type":"ping"}` messages (service/ws.py) draw on one bucket of `PING_BURST` (10) that refills
  at `PINGS_PER_S` (1 a second). Our clients send none of them (flashwire/client.py and
  web/ticker.js rely on the heartbeat; browsers cannot send protocol pings), and a WebSocket
  library's own keepalive pings one every 20 s by default (websockets), so a client 20 times
  that keen never comes near the limit, while a flood is refused after ten frames. A pong that
  answers the node's own keepalive ping does not count. Over the limit the connection is failed
  (RFC 6455 section 7.1.7) with 1008, policy violation (section 7.4.1), reason `TOO_MANY_PINGS`:
  the close frame goes out, the node stops reading at once, the application is told, and a peer
  that does not take the close frame within `stall_s` is cut off.
- **Frames after the node's close frame**: until the peer answers it (or uvicorn's closing
  timeout, 10 s, passes) the node still reads the connection; a frame that arrives then, of any
  kind, draws on the same bucket, and one over it aborts the connection. (While the connection
  is open, a data message other than a ping ends it with 4400: service/ws.py.)

How the server ended a connection is kept in `failed` (close code, reason) for the connection's
log line (service/connection_log.py): uvicorn itself tells the application only that the
connection was lost (1005), which would read as the client's own close. A connection lost
without any close frame is told to the application as 1006 (RFC 6455 section 7.1.5), not 1005.

Nothing here runs per event delivered: the hub's direct writes (service/wire.py) go to the
transport as before, and the budget check they make is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import TimerHandle
from asyncio.transports import BaseTransport
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.streams import StreamReader

from flashwire.core.protocol import PING_BURST, PINGS_PER_S, TOO_MANY_PINGS, CloseCode
from flashwire.core.settings import Settings
from flashwire.service.metrics import EdgeCounts, edge_counts_of
from flashwire.service.ws_waiting import Flag, MessageQueue

log = logging.getLogger(__name__)

# The first byte of a pong frame as websockets writes it (FIN + opcode 0xA).
_PONG_PREFIX = b"\x8a"
# uvicorn's reason for a keepalive ping that got no pong in time.
KEEPALIVE_TIMEOUT = "keepalive ping timeout"


class PingBudget:
    """A token bucket (one bucket, as in RFC 2697 section 3): `burst` pings at once, refilled at
    `per_s` a second up to `burst`. One per connection, made at its first ping."""

    __slots__ = ("_at", "_tokens", "burst", "per_s")

    def __init__(self, burst: int = PING_BURST, per_s: float = PINGS_PER_S) -> None:
        self.burst = burst
        self.per_s = per_s
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend one ping; False if none is left (the client is over its limit)."""
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class ReaderSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a send budget for what the server writes on its own
    and a limit on the pings a client sends.

    `send_budget_bytes` and `stall_s` are set per node by `server_limits.protocol_classes`;
    `ping_burst` and `pings_per_s` are the protocol's (flashwire/core/protocol.py).
    """

    send_budget_bytes: ClassVar[int] = Settings.send_buffer_max_bytes
    stall_s: ClassVar[float] = Settings.heartbeat_s
    ping_burst: ClassVar[int] = PING_BURST
    pings_per_s: ClassVar[float] = PINGS_PER_S
    # Set on the instance only when needed, so an idle reader's connection carries neither:
    # its pings (made at the first one), and (close code, reason) when this layer ended the
    # connection itself (keepalive timeout, too many pings).
    _pings: PingBudget | None = None
    failed: tuple[int, str] | None = None
    _aborted = False

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The same as uvicorn's asyncio.Queue and asyncio.Event at a twentieth of the memory
        # (service/ws_waiting.py).
        self.queue = MessageQueue()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        # Reading paused by us because the write buffer is over the budget (uvicorn's own
        # `read_paused` is about the application's queue of received messages).
        self.flow_paused = False
        self._stall_timer: TimerHandle | None = None
        self._stall_mark = 0
        self._abort_timer: TimerHandle | None = None
        # Where refusals are counted for /metrics (the application's, service/metrics.py).
        self.counts: EdgeCounts = edge_counts_of(config.app)

    def connection_made(self, transport: BaseTransport) -> None:
        """Register the connection (uvicorn) and make the budget the transport's high-water mark."""
        super().connection_made(transport)
        # The low-water mark defaults to a quarter of the high one (asyncio).
        self.transport.set_write_buffer_limits(high=self.send_budget_bytes)

    def handle_connect(self, event: Request) -> None:
        """Answer the handshake request (uvicorn), then let go of the request: its headers are in the
        ASGI scope, and the parsed request would otherwise live as long as the connection (about
        2.4 KB with its headers): in uvicorn's `request` and in the frame of websockets' handshake
        parser, which goes on to parse the connection's frames."""
        super().handle_connect(event)
        del self.request
        _restart_frame_parser(self.conn)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel our timers; uvicorn tells the application. A connection lost without a close frame
        either way is 1006 (RFC 6455 section 7.1.5), which uvicorn would tell as 1005."""
        for timer in (self._stall_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._stall_timer = self._abort_timer = None
        dropped = self.conn.close_rcvd is None and not self.close_sent and self.failed is None
        if dropped and self.handshake_complete and self.initial_response is None:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        super().connection_lost(exc)

    # -- flow control ------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The unsent bytes went over the budget: stop reading until they drain, and watch them."""
        super().pause_writing()
        self.flow_paused = True
        self.transport.pause_reading()
        self._watch_stall()

    def resume_writing(self) -> None:
        """The unsent bytes fell below the low-water mark: read again, unless the application's
        queue of received messages is what paused reading."""
        super().resume_writing()
        self.flow_paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Handle what arrived (uvicorn); stay paused if the budget is still spent.

        uvicorn resumes reading when the application has taken its messages, and before it sends a
        close frame, without knowing about the write side; what was read meanwhile is handled, then
        reading stops again.
        """
        super().data_received(data)
        if self.flow_paused:
            self.transport.pause_reading()

    def handle_ping(self) -> None:
        """A ping frame was read: over the client's ping limit, fail the connection; else write what
        websockets queued in answer to the pings just read: the last pong only, and only while the
        unsent bytes are within the budget; close replies always (RFC 6455 5.5.3)."""
        if self.failed is not None or self._aborted:
            return  # the rest of a batch read before the connection was failed or dropped
        if not self.ping_budget().take():
            self.too_many_pings()
            return
        output = self.conn.data_to_send()
        pongs = [frame for frame in output if frame[:1] == _PONG_PREFIX]
        others = [frame for frame in output if frame[:1] != _PONG_PREFIX]
        if pongs and self.transport.get_write_buffer_size() <= self.send_budget_bytes:
            others.insert(0, pongs[-1])
        if others:
            self.transport.write(b"".join(others))

    def handle_pong(self, event: Frame) -> None:
        """A pong frame: the answer to our keepalive ping (uvicorn), or an unsolicited one, which
        counts as a ping."""
        if self.failed is not None or self._aborted:
            return
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            if not self.ping_budget().take():
                self.too_many_pings()
            return
        super().handle_pong(event)

    def send_receive_event_to_app(self) -> None:
        """A whole data message was read: to the application (uvicorn), or, after our close frame,
        dropped; a peer that goes on sending after it is cut off once over its ping limit."""
        if self._aborted:
            return
        if self.close_sent and self.failed is None and not self.ping_budget().take():
            self.frames = []
            self._abort("it kept sending after the close frame")
            return
        super().send_receive_event_to_app()

    # -- what a client may send ------------------------------------------------------------

    def ping_budget(self) -> PingBudget:
        """The connection's pings (protocol and application pings together; service/ws.py)."""
        if self._pings is None:
            self._pings = PingBudget(self.ping_burst, self.pings_per_s)
        return self._pings

    def too_many_pings(self) -> None:
        """Fail the connection with 1008 (policy violation); one that is already closing is cut off."""
        if self.close_sent or self.transport.is_closing():
            self._abort("it kept sending pings after the close frame")
            return
        self.counts.ping_limit_closed += 1
        log.warning("WebSocket connection from %s closed (1008): too many pings", _peer(self.client))
        self.fail(CloseCode.POLICY_VIOLATION, TOO_MANY_PINGS)

    def fail(self, code: CloseCode, reason: str) -> None:
        """Fail the WebSocket connection (RFC 6455 section 7.1.7): send a close frame, read no more,
        tell the application at once, and cut the connection off if the close frame does not get
        out within `stall_s` (the client does not read)."""
        self.failed = (int(code), reason)
        self.conn.fail(int(code), reason)
        output = [frame for frame in self.conn.data_to_send() if frame[:1] != _PONG_PREFIX]
        self.transport.write(b"".join(output))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": int(code), "reason": reason})
        self.transport.close()
        self._watch_stall()
        self._abort_later(self.stall_s)

    def _abort(self, why: str) -> None:
        """Drop the connection now (once: the rest of a batch already read may call this again)."""
        if not self.disconnected and not self._aborted:
            self._aborted = True
            log.warning("WebSocket connection from %s aborted: %s", _peer(self.client), why)
            self.transport.abort()

    # -- connections that cannot drain -------------------------------------------------

    def _watch_stall(self) -> None:
        """Check in `stall_s` whether the client took any of what it has not taken yet."""
        if self._stall_timer is None and not self.disconnected:
            self._stall_mark = self.transport.get_write_buffer_size()
            self._stall_timer = self.loop.call_later(self.stall_s, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        if self.disconnected or not (self.flow_paused or self.transport.is_closing()):
            return
        unsent = self.transport.get_write_buffer_size()
        if unsent == 0:
            return
        if unsent < self._stall_mark:
            self._watch_stall()  # slow, but reading
            return
        log.warning(
            "WebSocket connection from %s aborted: it took none of its %d unsent bytes in %.1f s",
            _peer(self.client),
            unsent,
            self.stall_s,
        )
        self.transport.abort()

    def _abort_later(self, delay_s: float) -> None:
        """Abort the connection if it is still open in `delay_s` seconds."""
        if not self.disconnected and self._abort_timer is None:
            self._abort_timer = self.loop.call_later(delay_s, self._abort_if_open)

    def _abort_if_open(self) -> None:
        self._abort_timer = None
        if not self.disconnected:
            log.warning(
                "WebSocket connection from %s aborted: its closing did not complete", _peer(self.client)
            )
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        """No pong to our keepalive ping within its timeout: fail the connection with 1011, as
        uvicorn does (reason "keepalive ping timeout"), but tell the application at once and as the
        server's doing (uvicorn would say 1005 once the socket is gone, as if the client closed), and
        watch a peer that does not read, which would keep the closing transport, and its buffer, open."""
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.fail(CloseCode.INTERNAL_ERROR, KEEPALIVE_TIMEOUT)

    async def run_asgi(self) -> None:
        """Run the application (uvicorn); once it has finished, the connection gets uvicorn's closing
        timeout plus `stall_s` to end, then it is aborted."""
        try:
            await super().run_asgi()
        finally:
            if not self.disconnected:
                self._watch_stall()
                self._abort_later(self.close_timeout + self.stall_s)


def _restart_frame_parser(conn: Protocol) -> None:
    """Replace websockets' handshake parser, which keeps the request in a local variable, by its
    frame parser in the same state, if the handshake parser is waiting for the first frame.

    websockets' `ServerProtocol.parse` reads the request, then runs `Protocol.parse` (frames) within
    its own frame for the rest of the connection. When that inner parser is waiting at the start
    of a frame (`StreamReader.at_eof`, suspended only while the buffer is empty) a new
    `Protocol.parse`, run to its first wait, is in the very same state. Otherwise (the client sent
    a frame with its request, before the handshake's answer) the parser is left as it is.
    """
    inner = getattr(getattr(conn.parser, "gi_yieldfrom", None), "gi_yieldfrom", None)
    if getattr(inner, "gi_code", None) is not StreamReader.at_eof.__code__ or conn.reader.buffer:
        return
    conn.parser = Protocol.parse(conn)
    next(conn.parser)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"
