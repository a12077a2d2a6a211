"""bench/sse_stream.py, the parser bench.loadgen_sse reads /sse with: a wrong one would report lost
lines the service never lost, or miss a refused stream."""

from __future__ import annotations

import pytest

from bench.sse_stream import SseEvent, SseStream, StreamError

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def feed_all(stream: SseStream, data: bytes, step: int) -> list[SseEvent]:
    events: list[SseEvent] = []
    for start in range(0, len(data), step):
        events += stream.feed(data[start : start + step])
    return events


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
def test_sse_events_come_out_whole_however_the_bytes_are_split(step: int) -> None:
    body = (
        chunk(b'retry: 2000\ndata: {"type":"hello"}\n\n')
        + chunk(b"id: en:1-0\ndata: {")
        + chunk(b'"type":"snapshot"}\n\n: a comment\n\nid: en:2-0\ndata: a\ndata:b\n\n')
        + chunk(b"data: no id of its own\r\n\r\n")
        + b"0\r\n\r\n"
    )
    events = feed_all(SseStream(), HEAD + body, step)
    assert events == [
        SseEvent(b'{"type":"hello"}', None),
        SseEvent(b'{"type":"snapshot"}', "en:1-0"),
        SseEvent(b"a\nb", "en:2-0"),
        SseEvent(b"no id of its own", "en:2-0"),
    ]


def test_a_stream_without_chunked_framing_is_read_as_it_comes() -> None:
    stream = SseStream()
    assert stream.feed(b"HTTP/1.1 200 OK\r\n\r\ndata: x\r") == []
    # That CR and this LF are one line ending, not two (which would end the event after x).
    assert stream.feed(b"\ndata: y\r\n\r\n") == [SseEvent(b"x\ny", None)]


def test_a_refused_stream_is_an_error_not_an_empty_stream() -> None:
    with pytest.raises(StreamError, match="429"):
        SseStream().feed(b'HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\r\n{"error"')


def test_a_broken_chunk_is_an_error() -> None:
    with pytest.raises(StreamError):
        SseStream().feed(HEAD + b"5\r\ndata: x\n\n\r\n")
