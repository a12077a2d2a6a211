"""An incremental reader of one `GET /sse` response: HTTP/1.1 head, chunked body, SSE events.

bench.loadgen_sse feeds it whatever each socket delivers (`feed(data)`, any split) and gets back
the complete events, so a load generator holds thousands of streams without an HTTP library in
the way. What it follows:

- the response head ends at the first CRLF CRLF; its status line must say 200, else
  `StreamError` (a refused stream answers JSON, docs/protocol.md section 15);
- `Transfer-Encoding: chunked` (RFC 9112 section 7.1: hex size, optional extensions after `;`,
  CRLF, data, CRLF; size 0 ends the body) or, without it, the body as it comes;
- the event stream (HTML standard, "Parsing an event stream"): lines end with CRLF, LF or CR;
  a blank line dispatches the event; `data:` lines are joined with LF; `id:` sets the last event
  id, which persists to later events; one space after the colon is dropped; lines starting with
  `:` are comments; other fields (`retry`, `event`) are ignored here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseStream", "StreamError"]


class StreamError(ValueError):
    """The response is not a 200 event stream, or its chunked framing is broken."""


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its data (lines joined by LF) and the last event id at that point."""

    data: bytes
    id: str | None


class SseStream:
    """Parser state of one response; `feed` returns the events completed by `data`."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.chunked = False
        self.ended = False
        self.last_id: str | None = None
        self._head = b""
        self._raw = b""  # body bytes not yet de-chunked
        self._text = b""  # de-chunked event-stream bytes not yet split into complete lines
        self._data: list[bytes] = []
        self._pending_cr = False

    def feed(self, data: bytes) -> list[SseEvent]:
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return []
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            self._read_head(head)
        body = self._dechunk(data) if self.chunked else data
        return self._events(body)

    def _read_head(self, head: bytes) -> None:
        status_line, *headers = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise StreamError(f"not an HTTP/1.x status line: {status_line!r}")
        self.status = int(parts[1])
        if self.status != 200:
            raise StreamError(f"status {self.status}")
        for header in headers:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True

    def _dechunk(self, data: bytes) -> bytes:
        raw = self._raw + data if self._raw else data
        out: list[bytes] = []
        position = 0
        while not self.ended:
            line_end = raw.find(b"\r\n", position)
            if line_end < 0:
                break
            size_text = raw[position:line_end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise StreamError(f"bad chunk size {size_text!r}") from None
            start = line_end + 2
            if size == 0:
                self.ended = True
                position = len(raw)
                break
            if len(raw) < start + size + 2:
                break
            if raw[start + size : start + size + 2] != b"\r\n":
                raise StreamError("chunk not followed by CRLF")
            out.append(raw[start : start + size])
            position = start + size + 2
        self._raw = raw[position:]
        return b"".join(out)

    def _events(self, body: bytes) -> list[SseEvent]:
        if not body:
            return []
        if self._pending_cr:
            # A CR ended the previous piece: an LF now completes that same line ending.
            self._pending_cr = False
            if body.startswith(b"\n"):
                body = body[1:]
        if b"\r" in body:
            self._pending_cr = body.endswith(b"\r")
            body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        text = self._text + body if self._text else body
        cut = text.rfind(b"\n")
        if cut < 0:
            self._text = text
            return []
        self._text = text[cut + 1 :]
        events: list[SseEvent] = []
        for line in text[:cut].split(b"\n"):
            if not line:
                if self._data:
                    events.append(SseEvent(b"\n".join(self._data), self.last_id))
                    self._data = []
                continue
            name, colon, value = line.partition(b":")
            if not name and colon:
                continue  # a comment
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"id" and b"\0" not in value:
                self.last_id = value.decode()
        return events
