"""The connection edge of a service node: what happens to a socket before the application sees it.

uvicorn's HTTP protocol (httptools) accepts every connection, waits for a request head as long as
bytes keep coming, and buffers a head of any size (httptools joins a header's pieces as they
arrive: a 32 MiB header cost the node 76 MB, issue 10). `EdgeHttpProtocol` puts bounds on all of
it, from the moment a socket is accepted:

- **Sockets** (`FLASHWIRE_MAX_SOCKETS`): every accepted socket counts, readers and requests alike,
  from `connection_made` until it is gone (uvicorn's set of connections, which a WebSocket joins
  when it takes over the socket). One over the limit is closed at once, before a byte is read.
- **Time to send a head** (`FLASHWIRE_HEADER_TIMEOUT_S`): counted from the connection, and on a
  kept-alive connection from the end of the previous response. A head still incomplete then is
  answered `408` (RFC 9110 section 15.5.9); a connection that sent nothing of a next request is
  closed without an answer, as an idle keep-alive connection is.
- **Size of a head** (`FLASHWIRE_MAX_HEADER_BYTES`, `FLASHWIRE_MAX_URL_BYTES`): bytes are handed to
  the parser only as far as the limit allows, so a head is refused as soon as it is known to be
  too large, having cost at most the limit: `414` for a request target longer than its limit,
  `431` for a head larger than its limit (RFC 9110 section 15.5.15, RFC 6585 section 5). A head
  that begins in the same read as the end of a pipelined request before it is counted from the
  next read, so it can take up to twice the limit before it is refused.
- **WebSocket handshakes**: uvicorn hands the handshake to websockets, whose parser has limits of
  its own (8,192 bytes a line, 128 headers); a handshake over them is refused here the same way,
  instead of by websockets in plain text (or, with older websockets and uvicorn, not at all).
- **Malformed requests** get `400`.

Every refusal is the API's JSON error body (service/errors.py) with `Connection: close`, and the
headers every application response carries (`X-Content-Type-Options: nosniff`,
service/security_headers.py) and `Cache-Control: no-store`; then the
node stops sending, reads and drops what the client still sends for up to `LINGER_S`, and closes
(a "lingering close", RFC 9112 section 9.6, so that the answer is not lost to a reset while the
client is still sending). The OWASP Denial of Service Cheat Sheet asks for exactly these bounds:
limits on request size and header size, timeouts on slow requests, a connection limit.

Sockets closed at the limit and refused heads are counted for /metrics (service/metrics.py
`EdgeCounts`, found on the application uvicorn serves).

`protocol_classes(settings)` gives uvicorn the node's protocol classes, `edge_options(settings)`
its other limits; `flashwire.cli.server_config` passes both.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from flashwire.core.settings import Settings
from flashwire.service.errors import ApiError
from flashwire.service.metrics import EdgeCounts, edge_counts_of
from flashwire.service.security_headers import EVERY_RESPONSE
from flashwire.service.ws_protocol import ReaderSocketProtocol

log = logging.getLogger(__name__)

# Seconds a refused connection is kept half-closed, its input read and dropped, before it is cut.
LINGER_S = 2.0
# Seconds an idle kept-alive connection is kept without a byte of a next request (edge_options).
KEEP_ALIVE_S = 5
# Connections the kernel completes before the node accepts them (edge_options).
BACKLOG = 2048
# At most one warning this often about sockets closed at the socket limit.
FULL_LOG_EVERY_S = 10.0
# The bytes of a header line beyond its name and value: ": " and CRLF.
_HEADER_LINE_EXTRA = 4
# The most a request line holds beyond its target: a method (the longest registered ones are 17
# bytes), two spaces, "HTTP/1.1" and CRLF.
_REQUEST_LINE_EXTRA = 32


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """The limits `EdgeHttpProtocol` applies, from the node's settings (docs/configuration.md)."""

    max_sockets: int
    header_timeout_s: float
    max_header_bytes: int
    max_url_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        """FLASHWIRE_MAX_SOCKETS, _HEADER_TIMEOUT_S, _MAX_HEADER_BYTES and _MAX_URL_BYTES."""
        return cls(
            max_sockets=settings.max_sockets,
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_url_bytes=settings.max_url_bytes,
        )


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a head that is refused."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def url_too_long(limit: int) -> ApiError:
    """The 414 answer (RFC 9110 section 15.5.15)."""
    return ApiError(
        414, "uri_too_long", f"the request target is longer than {limit} bytes", field="request-target"
    )


def head_too_large(limit: int) -> ApiError:
    """The 431 answer (RFC 6585 section 5)."""
    return ApiError(
        431, "header_fields_too_large", f"the request head is larger than {limit} bytes", field="headers"
    )


# The headers every application response carries (service/security_headers.py), as bytes.
_EVERY_RESPONSE = [(name.lower().encode(), value.encode()) for name, value in EVERY_RESPONSE.items()]


def error_response(error: ApiError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response carrying `error`'s JSON body, with the headers of every application
    response (`X-Content-Type-Options: nosniff`), `Cache-Control: no-store` and `Connection: close`."""
    body = error.body().model_dump_json().encode()
    head = [STATUS_LINE[error.status]]
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_EVERY_RESPONSE,
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*head, b"\r\n", body])


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of this module's docstring.

    `edge` is set per node by `protocol_classes`.
    """

    edge: ClassVar[EdgeLimits] = EdgeLimits.from_settings(Settings())
    _last_full_log: ClassVar[float] = 0.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn sets these when a request begins; a refusal may come before that.
        self.url = b""
        self.headers = []
        self._head_timer: TimerHandle | None = None
        self._linger_timer: TimerHandle | None = None
        # The parser is between a request's end (or the connection's start) and the end of the
        # next request's head; `_head_bytes` of that head have been fed to it.
        self._in_head = True
        self._head_bytes = 0
        # A byte of the next request has arrived (llhttp's on_message_begin).
        self._message_begun = False
        # A request ended inside the piece being fed: the next head's bytes in it are not known.
        self._ended_in_piece = False
        # Answered and closing: input is read and dropped.
        self._refused = False
        # Where refusals are counted for /metrics (the application's, service/metrics.py).
        self.counts: EdgeCounts = edge_counts_of(config.app)

    # -- the socket ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the socket (uvicorn's set of connections); close it at once if it is one too many."""
        super().connection_made(transport)
        if len(self.connections) > self.edge.max_sockets:
            self._refused = True
            self.counts.sockets_refused += 1
            transport.close()
            now = time.monotonic()
            if now - EdgeHttpProtocol._last_full_log >= FULL_LOG_EVERY_S:
                EdgeHttpProtocol._last_full_log = now
                log.warning(
                    "socket limit reached (%d, FLASHWIRE_MAX_SOCKETS): closing new connections at once",
                    self.edge.max_sockets,
                )
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel our timers; uvicorn forgets the connection."""
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    # -- reading, within the head limit ----------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed the parser, never more of a head than the limit allows."""
        if self._refused:
            return
        self._unset_keepalive_if_required()
        limit = self.edge.max_header_bytes
        view = memoryview(data)
        while view:
            size = limit - self._head_bytes if self._in_head else limit
            piece, view = view[:size], view[size:]
            self._ended_in_piece = False
            if not self._feed(piece):
                return
            if self._in_head:
                if self._ended_in_piece:
                    self._head_bytes = self._seen_head_bytes() if self._message_begun else 0
                else:
                    self._head_bytes += len(piece)
                if self._head_bytes >= limit:
                    # Incomplete at the limit: any byte more would be over it.
                    self._refuse(self._oversized_head())
                    return

    def _feed(self, piece: memoryview) -> bool:
        """Parse `piece`; False once the connection is no longer parsed here (refused, closed,
        handed to the WebSocket protocol)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadRefused):
                self._refuse(exc.__context__.error)
            else:
                self._refuse(ApiError(400, "bad_request", "invalid HTTP request"))
            return False
        except httptools.HttpParserError as exc:
            reason = str(exc).strip() or "invalid HTTP request"
            self._refuse(ApiError(400, "bad_request", f"invalid HTTP request: {reason}"))
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return not self.transport.is_closing()

    def _seen_head_bytes(self) -> int:
        """Bytes of the current head the callbacks have seen (the header being read is not among
        them): a lower bound, for a head that began inside a piece."""
        return len(self.url) + sum(
            len(name) + len(value) + _HEADER_LINE_EXTRA for name, value in self.headers
        )

    def _oversized_head(self) -> ApiError:
        """414 if the head ran out while its target was still coming (the head holds no more than
        a method, spaces and a version beyond the target), else 431."""
        if self._head_bytes - len(self.url) <= _REQUEST_LINE_EXTRA:
            return url_too_long(self.edge.max_url_bytes)
        return head_too_large(self.edge.max_header_bytes)

    # -- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts (uvicorn makes its scope)."""
        super().on_message_begin()
        self._message_begun = True

    def on_url(self, url: bytes) -> None:
        """A piece of the request target (uvicorn joins them); refused past its limit."""
        super().on_url(url)
        if len(self.url) > self.edge.max_url_bytes:
            raise _HeadRefused(url_too_long(self.edge.max_url_bytes))

    def on_headers_complete(self) -> None:
        """The head is complete: no more deadline; uvicorn starts the request."""
        self._cancel_head_timer()
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request (with its body) is complete: what follows is the next head."""
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._message_begun = False
        self._ended_in_piece = True

    def on_response_complete(self) -> None:
        """A response went out (uvicorn starts a pipelined request or the keep-alive timer); if the
        connection now waits for a head, its deadline starts."""
        super().on_response_complete()
        if self.transport.is_closing() or self._refused:
            return
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol (uvicorn), unless websockets would refuse
        the handshake for its own limits: then it is refused here, like any oversized head."""
        self._cancel_head_timer()
        refusal = _beyond_websockets_limits(self.scope["method"], self.url, self.headers)
        if refusal is not None:
            self._refuse(refusal)
            return
        super().handle_websocket_upgrade()

    # -- deadlines and refusals ----------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.edge.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._refused or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its end starts the next deadline
        if not self._message_begun:
            self._refused = True
            self.transport.close()  # idle: nothing to answer
            return
        seconds = f"{self.edge.header_timeout_s:g}"
        self._refuse(ApiError(408, "timeout", f"the request head did not arrive within {seconds} s"))

    def _refuse(self, error: ApiError) -> None:
        """Answer `error` and close (lingering): the connection takes no further request."""
        if self._refused:
            return
        self._refused = True
        self._cancel_head_timer()
        self.counts.head_refused(error.status)
        if self.transport.is_closing():
            return
        target = self.url[:80].decode("latin-1") + ("…" if len(self.url) > 80 else "")
        log.warning(
            "%s - request refused: %d %s (target %r)", _peer(self.client), error.status, error.message, target
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # A response to an earlier request is still going out: there is no place for ours.
            self.transport.close()
            return
        self.transport.write(error_response(error, self.server_state.default_headers))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close: the answer and then FIN go out; what the client still sends is dropped
        # (data_received) until it closes too (eof_received) or LINGER_S is over.
        self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.abort)


def _beyond_websockets_limits(method: str, url: bytes, headers: list[tuple[bytes, bytes]]) -> ApiError | None:
    """Would websockets' handshake parser refuse this request (websockets.http11: at most
    MAX_LINE_LENGTH bytes a line, CRLF included, and MAX_NUM_HEADERS headers)? Our answer if so."""
    from websockets import http11

    request_line = len(method) + 1 + len(url) + len(" HTTP/1.1\r\n")
    if request_line > http11.MAX_LINE_LENGTH:
        return url_too_long(http11.MAX_LINE_LENGTH - len(method) - len(" HTTP/1.1\r\n") - 1)
    longest = max((len(name) + len(value) + _HEADER_LINE_EXTRA for name, value in headers), default=0)
    if longest > http11.MAX_LINE_LENGTH or len(headers) > http11.MAX_NUM_HEADERS:
        return ApiError(
            431,
            "header_fields_too_large",
            f"a WebSocket handshake takes at most {http11.MAX_NUM_HEADERS} headers"
            f" of at most {http11.MAX_LINE_LENGTH} bytes a line",
            field="headers",
        )
    return None


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def protocol_classes(settings: Settings) -> tuple[type[EdgeHttpProtocol], type[ReaderSocketProtocol]]:
    """The node's HTTP and WebSocket protocol classes for uvicorn (`http=`, `ws=`), bound to its limits."""
    limits = EdgeLimits.from_settings(settings)

    class NodeHttpProtocol(EdgeHttpProtocol):
        edge = limits

    class NodeSocketProtocol(ReaderSocketProtocol):
        send_budget_bytes = settings.send_buffer_max_bytes
        stall_s = settings.heartbeat_s

    return NodeHttpProtocol, NodeSocketProtocol


def forwarded_allow_ips(settings: Settings) -> list[str]:
    """FLASHWIRE_TRUSTED_PROXIES as uvicorn's `forwarded_allow_ips`: networks in strict notation
    (uvicorn takes "10.0.0.1/8", which we accept as 10.0.0.0/8, for a name and would never match it)."""
    return [
        str(ipaddress.ip_network(value, strict=False)) if "/" in value else value
        for value in settings.trusted_proxies
    ]


def edge_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's own limits for a service node, each chosen on purpose:

    - `proxy_headers` / `forwarded_allow_ips`: X-Forwarded-For and X-Forwarded-Proto are believed
      only from FLASHWIRE_TRUSTED_PROXIES, and not at all when it is empty (uvicorn's own default
      trusts 127.0.0.1, which would let anything on the host choose its client address). With
      proxies, the client is the right-most address not a trusted proxy (uvicorn's
      ProxyHeadersMiddleware), the one the per-client cap counts (service/client_addresses.py).
    - `limit_concurrency`: not used. It answers 503 in plain text once connections or tasks reach
      it, at request time only, to /healthz and /metrics as much as to anyone, and counts every
      reader's long-lived task; the socket limit above closes the socket one too many before it
      costs anything, and the reader limits (FLASHWIRE_MAX_CONNECTIONS, per client) answer in the
      protocol's terms.
    - `backlog` 2,048 (uvicorn's default, capped by the kernel's net.core.somaxconn): connections
      the kernel completes before the node accepts them. Enough for a reconnect storm after a node
      restart (readers come back jittered over seconds, docs/protocol.md section 11); sockets
      waiting there hold no memory of ours and are counted once accepted.
    - `timeout_keep_alive` 5 s: an idle kept-alive connection is closed after 5 s without a byte of
      a next request. Browsers reopen one cheaply, and every idle socket counts toward
      FLASHWIRE_MAX_SOCKETS. A next request that has begun has FLASHWIRE_HEADER_TIMEOUT_S.
    - `h11_max_incomplete_event_size` FLASHWIRE_MAX_HEADER_BYTES: the head limit for h11, should
      anyone run the node with `http="h11"` (h11 answers an oversized head with 400).
    """
    return {
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": forwarded_allow_ips(settings),
        "limit_concurrency": None,
        "backlog": BACKLOG,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
