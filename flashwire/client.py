"""A reference reader client: an async iterator of ticker events with resume and backoff.

    async for event in TickerClient("ws://127.0.0.1:8000/ws", editions=["en"]).events():
        print(event["type"], event.get("line", {}).get("text"))

It follows the client rules of docs/protocol.md (sections 8 to 11) to the letter, as
`web/reader.js` and `web/ticker.js` do: it keeps the last cursor of every edition and
drops any event it has already passed; it treats a connection on which nothing has
arrived for 2.5 x `heartbeat_s` as dead; it reconnects with one jittered exponential
backoff (at least 2.5 s after a 1013, or a handshake answered 429 or 503, and no sooner
than such an answer's Retry-After) and `since=` its cursors; it resets the backoff only
once a connection has delivered its catch-up; and it stops on the close codes and the
handshake answers (400, 403, 404, 414, 431) that mean the request itself must change.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from flashwire.core.cursors import cursor_key, is_cursor
from flashwire.core.protocol import (
    EVENT_TYPES,
    FATAL_CLOSE_CODES,
    FATAL_STATUSES,
    HELLO,
    LIVE_TYPES,
    SUBSCRIBED,
    TRY_LATER_STATUSES,
    CloseCode,
)

# "Try again later": the node is up but cannot serve readers now (its store is down, it is full, or
# this address holds its share of connections); a proxy in front may say it with 429 or 503.
TRY_LATER_CLOSE_CODE = CloseCode.TRY_AGAIN_LATER
# A Retry-After further away than this is taken as this: a wrong or hostile header must not park a
# reader for hours.
RETRY_AFTER_MAX_S = 300.0
# Messages that prove only that the node answered, not that it can deliver: they never reset
# the backoff, or a node whose store is down would be retried several times a second.
GREETING_TYPES = frozenset({HELLO, SUBSCRIBED})

DEFAULT_HEARTBEAT_S = 15.0  # until `hello` says otherwise
DEAD_AFTER_HEARTBEATS = 2.5
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 15.0
TRY_LATER_MIN_S = 5.0
# A 500-line snapshot of long lines is a few megabytes at most.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class SubscriptionRefused(Exception):
    """The server closed with a code that means the request itself is wrong (`code`, `reason`:
    the close code and reason), or answered the handshake so (`HandshakeRefused`)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"server refused the subscription ({code}): {reason}")
        self.code = code
        self.reason = reason


class HandshakeRefused(SubscriptionRefused):
    """The upgrade was answered with an HTTP status that means the request itself is wrong (400,
    403, 404, 414, 431): `code` is the status, `reason` the error body's `field: message` (or the
    status's phrase)."""


@dataclass(frozen=True)
class Retry:
    """Why a connection ended and how long the client waits before the next attempt."""

    attempt: int  # consecutive failed connections, 1 for the first retry
    delay_s: float  # the wait actually chosen
    reason: str
    was_live: bool  # the connection that ended had delivered its catch-up


def backoff_ceiling_s(
    attempt: int, *, try_later: bool, base_s: float = BACKOFF_BASE_S, max_s: float = BACKOFF_MAX_S
) -> float:
    """d = min(max, base x 2^(attempt-1)), raised to 5 s after a 1013 or 503; the wait is in [d/2, d]."""
    ceiling: float = min(max_s, base_s * 2.0 ** min(attempt - 1, 30))
    return max(ceiling, TRY_LATER_MIN_S) if try_later else ceiling


class _Ended(Exception):
    """A connection ended in a way that is retried (not before `retry_after_s`, if given)."""

    def __init__(self, reason: str, *, try_later: bool = False, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.try_later = try_later
        self.retry_after_s = retry_after_s


def retry_after_s(value: str | None, now: float | None = None) -> float:
    """Seconds a `Retry-After` value asks for (RFC 9110 section 10.2.3: delay-seconds or an
    HTTP-date), at most RETRY_AFTER_MAX_S; 0 for none or a value that is neither."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        return 0.0
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _refusal_reason(status: int, phrase: str, body: bytes | bytearray) -> str:
    """`field: message` of the API's JSON error body (docs/protocol.md 1), else the status phrase."""
    try:
        error = orjson.loads(bytes(body) or b"{}").get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        field = error.get("field")
        return f"{field}: {error['message']}" if isinstance(field, str) and field else error["message"]
    return phrase or f"HTTP {status}"


def _handshake_answered(exc: InvalidStatus) -> _Ended:
    """What a handshake answered with an HTTP status means: raise `HandshakeRefused` for a status
    after which asking again cannot help; otherwise describe it, with its Retry-After."""
    response = exc.response
    status = response.status_code
    if status in FATAL_STATUSES:
        reason = _refusal_reason(status, response.reason_phrase, response.body)
        raise HandshakeRefused(status, reason) from None
    return _Ended(
        f"the handshake was answered {status}",
        try_later=status in TRY_LATER_STATUSES,
        retry_after_s=retry_after_s(response.headers.get("Retry-After")),
    )


async def _receive(ws: ClientConnection, heartbeat_s: float, since: float) -> dict[str, Any]:
    """The next message; a connection silent for 2.5 x heartbeat_s after `since` (loop time of the
    last message, or of the start of the connection) is dropped as dead."""
    dead_after_s = DEAD_AFTER_HEARTBEATS * heartbeat_s
    while True:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the caller's
            # cancellation when recv() completes in the same instant.
            async with asyncio.timeout_at(since + dead_after_s):
                raw = await ws.recv()
        except TimeoutError:
            # A half-open connection never delivers a close frame: drop it without a handshake.
            ws.transport.abort()
            raise _Ended(f"nothing received for {dead_after_s:g} s (2.5 x heartbeat_s)") from None
        message = orjson.loads(raw)
        if isinstance(message, dict):
            return message


def _heartbeat_s(hello: dict[str, Any], current: float) -> float:
    announced = hello.get("heartbeat_s")
    if isinstance(announced, int | float) and not isinstance(announced, bool) and announced > 0:
        return float(announced)
    return current


class TickerClient:
    """Subscribe to a Flashwire node and yield its messages, resuming after every drop.

    :param url: the node's `/ws` URL.
    :param editions: editions to subscribe to; every edition when empty.
    :param topics: topic filter; a line matches with any of them.
    :param min_urgency: `flash`, `urgent` or `routine`.
    :param since: resume cursors per edition, e.g. saved from `client.cursors`.
    :param backoff_base_s: the backoff's first ceiling (0.25 s; tests may shrink it).
    :param backoff_max_s: the backoff's largest ceiling (15 s).
    :param include_control: also yield `hello`, `subscribed`, `heartbeat` and `pong`.
    :param on_retry: called with a `Retry` before each wait (`flashwire listen` reports it).
    :param on_live: called each time a connection has delivered its catch-up after a retry.
    """

    def __init__(
        self,
        url: str,
        *,
        editions: list[str] | None = None,
        topics: list[str] | None = None,
        min_urgency: str | None = None,
        since: dict[str, str] | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        include_control: bool = False,
        on_retry: Callable[[Retry], object] | None = None,
        on_live: Callable[[], object] | None = None,
    ) -> None:
        self.url = url
        self.editions = editions or []
        self.topics = topics or []
        self.min_urgency = min_urgency
        self.cursors: dict[str, str] = dict(since or {})
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.include_control = include_control
        self.on_retry = on_retry
        self.on_live = on_live
        self.reconnects = 0
        self.attempt = 0

    def _request_url(self) -> str:
        query: dict[str, str] = {}
        if self.editions:
            query["editions"] = ",".join(self.editions)
        if self.topics:
            query["topics"] = ",".join(self.topics)
        if self.min_urgency:
            query["min_urgency"] = self.min_urgency
        if self.cursors:
            query["since"] = ",".join(f"{e}:{c}" for e, c in sorted(self.cursors.items()))
        if not query:
            query["editions"] = ""
        return f"{self.url}?{urlencode(query, safe=',:')}"

    def _accept(self, message: dict[str, Any]) -> bool:
        """Track cursors; False for an event already seen (defence in depth), and for an event
        whose cursor breaks the cursor rule: it cannot be placed in order, nor resumed from."""
        kind = message.get("type")
        edition = message.get("edition")
        cursor = message.get("cursor")
        if not isinstance(edition, str) or not isinstance(cursor, str):
            return True
        if kind not in EVENT_TYPES:
            return True
        if not is_cursor(cursor):
            return False
        if kind in LIVE_TYPES:
            known = self.cursors.get(edition)
            if known is not None and cursor_key(cursor) <= cursor_key(known):
                return False
        self.cursors[edition] = cursor
        return True

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Yield snapshot and line/update/retract messages forever (and control ones if asked)."""
        loop = asyncio.get_running_loop()
        while True:
            live = False
            # Until `hello` says otherwise the period is 15 s, counted from the start of the attempt.
            heartbeat_s, last_arrival = DEFAULT_HEARTBEAT_S, loop.time()
            try:
                async with connect(
                    self._request_url(),
                    compression=None,
                    max_size=MAX_MESSAGE_BYTES,
                    open_timeout=DEAD_AFTER_HEARTBEATS * DEFAULT_HEARTBEAT_S,
                    # Our own dead-connection timer (2.5 x heartbeat_s) replaces websockets' pings.
                    ping_interval=None,
                ) as ws:
                    while True:
                        message = await _receive(ws, heartbeat_s, last_arrival)
                        last_arrival = loop.time()
                        kind = message.get("type")
                        if kind == HELLO:
                            heartbeat_s = _heartbeat_s(message, heartbeat_s)
                        elif not live and kind not in GREETING_TYPES:
                            live = True
                            if self.attempt and self.on_live is not None:
                                self.on_live()
                            self.attempt = 0
                        if not self._accept(message):
                            continue
                        if self.include_control or kind in EVENT_TYPES:
                            yield message
            except _Ended as exc:
                ended = exc
            except ConnectionClosed as closed:
                ended = self._closed(closed)
            except InvalidStatus as exc:
                ended = _handshake_answered(exc)
            except InvalidURI:
                raise
            except (TimeoutError, OSError, InvalidHandshake) as exc:
                ended = _Ended(f"cannot connect: {exc or type(exc).__name__}")
            await self._wait(ended, was_live=live)

    def _closed(self, closed: ConnectionClosed) -> _Ended:
        """Raise `SubscriptionRefused` for a fatal close code; otherwise describe the close."""
        frame = closed.rcvd or closed.sent  # `sent` when this side closed, e.g. 1009 on a huge message
        if frame is None:
            return _Ended("the connection dropped (no close frame)")
        if frame.code in FATAL_CLOSE_CODES:
            raise SubscriptionRefused(frame.code, frame.reason) from None
        reason = f"closed {frame.code}" + (f": {frame.reason}" if frame.reason else "")
        return _Ended(reason, try_later=frame.code == TRY_LATER_CLOSE_CODE)

    async def _wait(self, ended: _Ended, *, was_live: bool) -> None:
        """Sleep the jittered backoff of the next attempt, and at least the Retry-After the server
        gave (plus up to a fifth more, so that the clients it refused do not all come back in the
        same instant), telling `on_retry` first."""
        self.attempt += 1
        self.reconnects += 1
        ceiling = backoff_ceiling_s(
            self.attempt, try_later=ended.try_later, base_s=self.backoff_base_s, max_s=self.backoff_max_s
        )
        delay_s = random.uniform(ceiling / 2, ceiling)
        if ended.retry_after_s:
            delay_s = max(delay_s, ended.retry_after_s * random.uniform(1.0, 1.2))
        if self.on_retry is not None:
            self.on_retry(Retry(self.attempt, delay_s, ended.reason, was_live))
        await asyncio.sleep(delay_s)
